/*! Leadflow capture.js: forms, attribution and page views for your website.
 *
 * <script src="https://capture.example.com/capture.js" data-write-key="WRITE_KEY" defer></script>
 * <form data-leadflow-form="demo-request" data-leadflow-redirect="/thanks"> ... </form>
 *
 * - Keeps an anonymous visitor id (localStorage, falls back to a cookie).
 * - Remembers the first-touch UTM parameters and referrer of the visit.
 * - Sends every <form data-leadflow-form="FORM_ID"> to /v1/forms/FORM_ID/submissions with those,
 *   an Idempotency-Key (a retried or double-clicked submit of the same content counts once)
 *   and the honeypot field `_hp`.
 * - Records a page view (/v1/page) when a write key is given; `Leadflow.track(event, props)`
 *   and `Leadflow.identify(traits)` send Segment-style calls.
 */
(function (window, document) {
  "use strict";
  var script = document.currentScript;
  var base = script ? new URL(script.src, window.location.href).origin : "";
  var writeKey = script ? script.getAttribute("data-write-key") : null;
  var UTM = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"];

  function uuid() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 0x3) | 0x8).toString(16);
    });
  }

  function store(key, value) {
    try {
      if (value === undefined) return window.localStorage.getItem(key);
      window.localStorage.setItem(key, value);
    } catch (e) {
      if (value === undefined) {
        var m = document.cookie.match(new RegExp("(?:^|; )" + key + "=([^;]*)"));
        return m ? decodeURIComponent(m[1]) : null;
      }
      document.cookie = key + "=" + encodeURIComponent(value) + "; path=/; max-age=31536000; SameSite=Lax";
    }
    return value;
  }

  var anonymousId = store("lf_aid") || store("lf_aid", uuid());

  // First touch of this visit: UTM parameters from the landing URL, and the referrer.
  var params = new URLSearchParams(window.location.search);
  var touch = {};
  try { touch = JSON.parse(store("lf_touch") || "{}"); } catch (e) { touch = {}; }
  if (UTM.some(function (k) { return params.get(k); })) {
    touch = { referrer: document.referrer || null };
    UTM.forEach(function (k) { touch[k] = params.get(k); });
    store("lf_touch", JSON.stringify(touch));
  } else if (!touch.referrer && document.referrer) {
    touch.referrer = document.referrer;
    store("lf_touch", JSON.stringify(touch));
  }

  function attribution() {
    var out = { anonymous_id: anonymousId, page_url: window.location.href };
    UTM.concat(["referrer"]).forEach(function (k) { if (touch[k]) out[k] = touch[k]; });
    return out;
  }

  function call(type, body) {
    if (!writeKey) return;
    body.type = type;
    body.anonymousId = anonymousId;
    body.messageId = uuid();
    body.writeKey = writeKey; // beacons cannot send an Authorization header
    body.timestamp = new Date().toISOString();
    body.context = { page: { url: window.location.href, referrer: document.referrer || null },
                     campaign: { source: touch.utm_source, medium: touch.utm_medium,
                                 name: touch.utm_campaign, term: touch.utm_term,
                                 content: touch.utm_content } };
    var payload = JSON.stringify(body);
    var url = base + "/v1/" + type;
    // text/plain keeps it a "simple" request: no CORS preflight, and sendBeacon survives unload.
    if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([payload], { type: "text/plain" }))) return;
    fetch(url, { method: "POST", body: payload, headers: { "Content-Type": "text/plain" }, keepalive: true });
  }

  function formFields(form) {
    var data = {};
    new FormData(form).forEach(function (value, name) {
      if (typeof value !== "string") return; // files are not lead data
      if (name in data) data[name] = [].concat(data[name], value);
      else data[name] = value;
    });
    form.querySelectorAll("input[type=checkbox][name]").forEach(function (box) {
      if (!(box.name in data)) data[box.name] = false;
      else if (data[box.name] === "on") data[box.name] = true;
    });
    var extra = attribution();
    Object.keys(extra).forEach(function (k) { if (!(k in data)) data[k] = extra[k]; });
    if (!("_hp" in data)) data._hp = "";
    return data;
  }

  function submit(form, event) {
    event.preventDefault();
    var formId = form.getAttribute("data-leadflow-form");
    var fields = JSON.stringify(formFields(form));
    // The same content sent again from this page (a double click, however slow, or a retry
    // after a network error) reuses the key, so it counts once; changed content is a new one.
    var key = form.__leadflowBody === fields && form.getAttribute("data-leadflow-key") || uuid();
    form.setAttribute("data-leadflow-key", key);
    form.__leadflowBody = fields;
    var done = function (detail) {
      form.dispatchEvent(new CustomEvent("leadflow:" + detail.status, { detail: detail, bubbles: true }));
    };
    fetch(base + "/v1/forms/" + encodeURIComponent(formId) + "/submissions", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": key },
      body: fields,
    }).then(function (resp) {
      return resp.json().then(function (body) {
        if (resp.ok) {
          done({ status: "submitted", response: body });
          var to = form.getAttribute("data-leadflow-redirect");
          if (to) window.location.assign(to);
        } else {
          done({ status: "rejected", response: body });
        }
      });
    }).catch(function (error) {
      done({ status: "failed", error: String(error) });
    });
  }

  function bind(root) {
    (root || document).querySelectorAll("form[data-leadflow-form]").forEach(function (form) {
      if (form.__leadflow) return;
      form.__leadflow = true;
      form.addEventListener("submit", function (event) { submit(form, event); });
    });
  }

  window.Leadflow = {
    anonymousId: function () { return anonymousId; },
    page: function (name, properties) { call("page", { name: name || document.title, properties: properties || {} }); },
    track: function (event, properties) { call("track", { event: event, properties: properties || {} }); },
    identify: function (traits, userId) { call("identify", { traits: traits || {}, userId: userId }); },
    bind: bind,
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { bind(); window.Leadflow.page(); });
  } else {
    bind();
    window.Leadflow.page();
  }
})(window, document);
