/*! Leadflow capture.js: forms, attribution, page views, consent. See docs/capture.md. */
(function (window, document) {
  "use strict";
  var script = document.currentScript;
  var attr = function (name) { return script && script.getAttribute(name); };
  var base = script ? new URL(script.src, location.href).origin : "";
  var writeKey = attr("data-write-key");
  var UTM = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"];
  var CLICK = ["gclid", "gbraid", "wbraid", "fbclid", "li_fat_id", "msclkid"];
  var KEYS = ["lf_aid", "lf_ft", "lf_lt", "lf_touch"];
  var landing = location.href, referrer = document.referrer;
  // true: go; null: wait for Leadflow.consent(), queueing calls in memory; false: refused (GPC).
  var consent = navigator.globalPrivacyControl === true ? false
    : attr("data-consent") === "required" ? null : true;
  var queue = [], anonymousId = null, first = null, last = null;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
    });
  }

  // localStorage, else a first-party cookie; null deletes.
  function store(key, value) {
    try {
      if (value === undefined) return localStorage.getItem(key);
      if (value === null) localStorage.removeItem(key);
      else localStorage.setItem(key, value);
    } catch (e) {
      if (value === undefined) {
        var m = document.cookie.match(new RegExp("(?:^|; )" + key + "=([^;]*)"));
        return m ? decodeURIComponent(m[1]) : null;
      }
      document.cookie = key + "=" + encodeURIComponent(value || "") + "; path=/; SameSite=Lax; max-age=" +
        (value === null ? 0 : 31536000);
    }
    return value;
  }

  function json(key) {
    try { return JSON.parse(store(key) || "null"); } catch (e) { return null; }
  }

  // A touch: the UTM campaign, ad click ids and outside referrer a visit arrived with.
  function touchOf(url, ref, always) {
    var params = new URL(url).searchParams, t = {}, any = always;
    UTM.concat(CLICK).forEach(function (k) { if (params.get(k)) { t[k] = params.get(k); any = true; } });
    if (ref && new URL(ref).host !== location.host) { t.referrer = ref; any = true; }
    t.landing_url = url;
    t.at = new Date().toISOString();
    return any ? t : null;
  }

  function start() {
    anonymousId = store("lf_aid") || store("lf_aid", uuid());
    var t = touchOf(landing, referrer);
    // First touch: kept from the first visit, never overwritten.
    first = json("lf_ft");
    if (!first) store("lf_ft", JSON.stringify(first = t || touchOf(landing, referrer, true)));
    // Last touch: the latest visit that came from a campaign, an ad click or another site.
    last = json("lf_lt");
    if (t) store("lf_lt", JSON.stringify(last = t));
    last = last || first;
    queue.splice(0).forEach(send);
  }

  function forget() {
    KEYS.forEach(function (k) { store(k, null); });
    anonymousId = first = last = null;
    queue = [];
  }

  function attribution() {
    var out = { page_url: location.href };
    // No consent: only the page the form is on.
    if (!anonymousId) return out;
    out.anonymous_id = anonymousId;
    UTM.concat(["referrer"]).forEach(function (k) {
      if (first[k]) out[k] = first[k];
      if (last[k]) out["last_" + k] = last[k];
    });
    CLICK.forEach(function (k) { if (last[k] || first[k]) out[k] = last[k] || first[k]; });
    out.landing_url = first.landing_url;
    out.first_touch_at = first.at;
    out.last_touch_at = last.at;
    return out;
  }

  function call(type, body) {
    if (!writeKey || consent === false) return;
    body.type = type;
    body.messageId = uuid();
    body.timestamp = new Date().toISOString();
    body.url = location.href;
    if (consent) send(body);
    else queue.push(body);
  }

  function send(body) {
    var clicks = {};
    CLICK.forEach(function (k) { if (last[k]) clicks[k] = last[k]; });
    body.anonymousId = anonymousId;
    // Beacons cannot send an Authorization header.
    body.writeKey = writeKey;
    body.context = { page: { url: body.url, referrer: referrer || null }, click_ids: clicks,
                     campaign: { source: last.utm_source, medium: last.utm_medium,
                                 name: last.utm_campaign, term: last.utm_term, content: last.utm_content } };
    delete body.url;
    var payload = JSON.stringify(body), url = base + "/v1/" + body.type;
    // text/plain keeps it a "simple" request: no CORS preflight, and sendBeacon survives unload.
    if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([payload], { type: "text/plain" }))) return;
    fetch(url, { method: "POST", body: payload, headers: { "Content-Type": "text/plain" }, keepalive: true });
  }

  // The form's fields (checkboxes as booleans; files left out) plus attribution.
  function formFields(form) {
    var data = {};
    new FormData(form).forEach(function (value, name) {
      if (typeof value !== "string") return;
      if (name in data) data[name] = [].concat(data[name], value);
      else data[name] = value;
    });
    form.querySelectorAll("input[type=checkbox][name]").forEach(function (box) {
      if (!(box.name in data)) data[box.name] = false;
      else if (data[box.name] === "on") data[box.name] = true;
    });
    var extra = attribution();
    Object.keys(extra).forEach(function (k) { if (!(k in data) && extra[k]) data[k] = extra[k]; });
    if (!("_hp" in data)) data._hp = "";
    return data;
  }

  // Network failure: post natively, to the form's action or to capture (303 back to the site).
  function nativeSubmit(form, action, data) {
    if (!form.getAttribute("action")) {
      var to = form.getAttribute("data-leadflow-redirect");
      form.setAttribute("action", action);
      form.setAttribute("method", "post");
      data._redirect = new URL(to || location.href, location.href).href;
    }
    Object.keys(data).forEach(function (k) {
      if (form.elements[k]) return;
      var input = form.appendChild(document.createElement("input"));
      input.type = "hidden", input.name = k, input.value = data[k];
    });
    HTMLFormElement.prototype.submit.call(form);
  }

  function submit(form, event) {
    event.preventDefault();
    var data = formFields(form), fields = JSON.stringify(data);
    var action = base + "/v1/forms/" + encodeURIComponent(form.getAttribute("data-leadflow-form")) +
      "/submissions";
    // The same content sent again (a double click, a retry) reuses the key: it counts once.
    var key = form.__leadflowBody === fields && form.getAttribute("data-leadflow-key") || uuid();
    form.setAttribute("data-leadflow-key", key);
    form.__leadflowBody = fields;
    var done = function (detail) {
      form.dispatchEvent(new CustomEvent("leadflow:" + detail.status, { detail: detail, bubbles: true }));
    };
    fetch(action, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": key },
      body: fields,
    }).then(function (resp) {
      return resp.json().then(function (body) {
        if (!resp.ok) return done({ status: "rejected", response: body });
        done({ status: "submitted", response: body });
        var to = form.getAttribute("data-leadflow-redirect");
        if (to) location.assign(to);
      });
    }, function (error) {
      done({ status: "failed", error: String(error) });
      if (form.getAttribute("data-leadflow-fallback") !== "off") nativeSubmit(form, action, data);
    });
  }

  function bind(root) {
    (root || document).querySelectorAll("form[data-leadflow-form]").forEach(function (form) {
      if (form.__leadflow) return;
      form.__leadflow = true;
      form.addEventListener("submit", function (event) { submit(form, event); });
    });
  }

  var Leadflow = window.Leadflow = {
    anonymousId: function () { return anonymousId; },
    // Single-page apps: call on every route change (or load the script with data-spa="history").
    page: function (name, properties) { call("page", { name: name || document.title, properties: properties || {} }); },
    track: function (event, properties) { call("track", { event: event, properties: properties || {} }); },
    identify: function (traits, userId) { call("identify", { traits: traits || {}, userId: userId }); },
    consent: function (granted) {
      if (!granted) consent = false, forget();
      else if (consent !== true) consent = true, start();
    },
    bind: bind,
  };

  var path = location.pathname + location.search;
  function routed() {
    var now = location.pathname + location.search;
    if (now !== path) { path = now; Leadflow.page(); }
  }
  if (attr("data-spa") === "history") {
    var push = history.pushState;
    history.pushState = function () { var r = push.apply(this, arguments); routed(); return r; };
    window.addEventListener("popstate", routed);
  }

  if (consent) start();
  // Global Privacy Control: also drop what an earlier visit kept.
  else if (consent === false) forget();
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { bind(); Leadflow.page(); });
  } else {
    bind();
    Leadflow.page();
  }
})(window, document);
