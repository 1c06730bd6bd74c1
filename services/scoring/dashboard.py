"""The dashboard page: server-rendered HTML with inline SVG charts, no front-end build step.

:func:`render` is pure (figures in, HTML out). What routing knows (time to first touch, SLA
outcomes, hot leads waiting) comes from routing's ``GET /v1/reports/speed-to-lead`` over HTTP
(:func:`fetch_speed`): the services never import each other. When routing does not answer, the
page says so and shows the rest.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import httpx

from shared.events import rfc3339
from shared.settings import Settings

log = logging.getLogger(__name__)

GROUPINGS = ("source", "campaign", "form", "team")
PRESETS = (("Today", 1), ("7 days", 7), ("30 days", 30), ("90 days", 90), ("1 year", 365))
REFRESH_SECONDS = 60
OUTCOME_COLORS = {
    "met": "#2e9e5b",
    "warned": "#e0a800",
    "breached": "#e4572e",
    "escalated": "#8e2c7e",
    "open": "#9aa5b1",
}
FUNNEL_COLORS = ("#3b6fd8", "#5a86e0", "#7a9de6", "#2e9e5b", "#1f7a44")


@dataclass(frozen=True, slots=True)
class View:
    """What the page shows: the window [start, end) and the grouping."""

    start: datetime
    end: datetime
    group_by: str
    now: datetime


def routing_url(settings: Settings) -> str:
    """Routing's base URL: LEADFLOW_ROUTING_URL, else routing's port on this host."""
    configured = os.environ.get("LEADFLOW_ROUTING_URL")
    if configured:
        return configured.rstrip("/")
    host = settings.leadflow_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{settings.leadflow_routing_port}"


async def fetch_speed(
    settings: Settings,
    start: datetime,
    end: datetime,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any] | None:
    """Routing's speed-to-lead report for the window, or None when routing does not answer."""
    params = {"from": rfc3339(start), "to": rfc3339(end)}
    return await _routing_get(settings, "/v1/reports/speed-to-lead", params, transport)


async def fetch_nurture(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> dict[str, Any] | None:
    """Routing's nurture tracks with their KPIs, or None when routing does not answer."""
    return await _routing_get(settings, "/v1/nurture/tracks", {}, transport)


async def _routing_get(
    settings: Settings,
    path: str,
    params: dict[str, str],
    transport: httpx.AsyncBaseTransport | None,
) -> dict[str, Any] | None:
    token = (settings.read_tokens or settings.api_tokens or ("",))[0]
    try:
        async with httpx.AsyncClient(
            base_url=routing_url(settings),
            transport=transport,
            timeout=3.0,
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            resp = await client.get(path, params=params)
        if resp.status_code != 200:
            log.warning("routing's %s answered %s", path, resp.status_code)
            return None
        data: dict[str, Any] = resp.json()
        return data
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("routing's %s is not reachable: %s", path, exc)
        return None


# --- formatting ---------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """HTML-escaped text ('' for None)."""
    return "" if value is None else html.escape(str(value))


def num(value: float | None) -> str:
    """A count with thousands separators ('-' for None)."""
    if value is None:
        return "-"
    return f"{value:,.0f}".replace(",", "\u202f")


def pct(value: float | None) -> str:
    """A ratio as a percentage ('-' for None)."""
    return "-" if value is None else f"{value * 100:.1f}%"


def money(value: float | None, currency: str | None) -> str:
    """An amount with its currency ('-' for None)."""
    if value is None:
        return "-"
    return f"{value:,.2f}".replace(",", "\u202f") + f" {currency or ''}".rstrip()


def duration(seconds: float | None) -> str:
    """Seconds as a short human duration ('-' for None)."""
    if seconds is None:
        return "-"
    s = abs(seconds)
    if s < 60:
        text = f"{s:.0f} s"
    elif s < 3600:
        text = f"{s / 60:.0f} min"
    elif s < 48 * 3600:
        text = f"{s / 3600:.1f} h"
    else:
        text = f"{s / 86400:.1f} d"
    return ("-" if seconds < 0 else "") + text


# --- charts (inline SVG) ----------------------------------------------------------------------


def funnel_svg(steps: Sequence[tuple[str, int]]) -> str:
    """A funnel: one centred bar per step with its label and count, and between two steps the
    conversion from the one before."""
    width, row, gap, label_w, count_w = 640, 40, 22, 120, 70
    top = max((n for _, n in steps), default=0) or 1
    height = len(steps) * (row + gap)
    area = width - label_w - count_w
    middle = label_w + area / 2
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Funnel" preserveAspectRatio="xMidYMid meet">'
    ]
    for i, (label, n) in enumerate(steps):
        y = i * (row + gap)
        w = max(4.0, area * n / top)
        color = FUNNEL_COLORS[i % len(FUNNEL_COLORS)]
        parts.append(
            f'<text x="0" y="{y + row / 2 + 5}">{esc(label)}</text>'
            f'<rect x="{middle - w / 2:.1f}" y="{y}" width="{w:.1f}" height="{row}" rx="4" '
            f'fill="{color}"/><text x="{width}" y="{y + row / 2 + 5}" text-anchor="end" '
            f'class="count">{num(n)}</text>'
        )
        if i + 1 < len(steps):
            nxt = steps[i + 1][1]
            rate = pct(nxt / n) if n else "-"
            parts.append(
                f'<text x="{middle}" y="{y + row + gap / 2 + 5}" text-anchor="middle" '
                f'class="rate">↓ {rate}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def hbar_svg(rows: Sequence[tuple[str, float, str]], color: str = "#3b6fd8") -> str:
    """Horizontal bars: (label, value, value as text) per row."""
    if not rows:
        return '<p class="empty">No data for this period.</p>'
    width, row = 640, 30
    label_w, text_w = 170, 120
    top = max(v for _, v, _ in rows) or 1
    height = len(rows) * row
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img">']
    for i, (label, value, text) in enumerate(rows):
        y = i * row
        w = max(2.0, (width - label_w - text_w) * value / top)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 20}" text-anchor="end">{esc(label[:24])}</text>'
            f'<rect x="{label_w}" y="{y + 5}" width="{w:.1f}" height="{row - 10}" rx="3" '
            f'fill="{color}"/><text x="{label_w + w + 6:.1f}" y="{y + 20}">{esc(text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def columns_svg(bars: Sequence[tuple[str, int]], color: str = "#3b6fd8") -> str:
    """Vertical bars with their labels below and counts above (a histogram)."""
    if not bars or not any(n for _, n in bars):
        return '<p class="empty">No first touch in this period.</p>'
    width, height, base = 640, 240, 200
    top = max(n for _, n in bars) or 1
    slot = width / len(bars)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img">']
    for i, (label, n) in enumerate(bars):
        h = (base - 24) * n / top
        x = i * slot + slot * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
            f'rx="3" fill="{color}"/>'
            f'<text x="{x + slot * 0.35:.1f}" y="{base - h - 6:.1f}" text-anchor="middle">'
            f"{num(n)}</text>"
            f'<text x="{x + slot * 0.35:.1f}" y="{base + 20}" text-anchor="middle" '
            f'class="small">{esc(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def stacked_svg(days: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    """SLA outcomes over time: one stacked bar per day (per week beyond 62 days)."""
    if not days:
        return '<p class="empty">No assignment in this period.</p>'
    periods: list[dict[str, Any]] = list(days)
    if len(periods) > 62:
        weeks: list[dict[str, Any]] = []
        for i in range(0, len(periods), 7):
            chunk = periods[i : i + 7]
            weeks.append({"day": chunk[0]["day"], **{k: sum(d[k] for d in chunk) for k in keys}})
        periods = weeks
    width, height, base, left = 640, 240, 200, 30
    top = max((sum(d[k] for k in keys) for d in periods), default=0) or 1
    slot = (width - left) / len(periods)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img">']
    parts.append(f'<text x="0" y="14" class="small">{num(top)}</text>')
    every = max(1, len(periods) // 8)
    for i, d in enumerate(periods):
        x = left + i * slot
        y = float(base)
        for k in keys:
            h = (base - 20) * d[k] / top
            if h > 0:
                y -= h
                parts.append(
                    f'<rect x="{x + slot * 0.1:.1f}" y="{y:.1f}" width="{slot * 0.8:.1f}" '
                    f'height="{h:.1f}" fill="{OUTCOME_COLORS[k]}"><title>{esc(d["day"])} {k}: '
                    f"{d[k]}</title></rect>"
                )
        if i % every == 0:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{base + 20}" text-anchor="middle" '
                f'class="small">{esc(str(d["day"])[5:])}</text>'
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{OUTCOME_COLORS[k]}"></i>{k}</span>' for k in keys
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


# --- the page ---------------------------------------------------------------------------------


def _tile(kpi: str, label: str, value: str, note: str = "") -> str:
    small = f"<small>{esc(note)}</small>" if note else ""
    return (
        f'<div class="tile" data-kpi="{kpi}"><span>{esc(label)}</span>'
        f'<b class="value">{esc(value)}</b>{small}</div>'
    )


def _controls(view: View) -> str:
    last_day = (view.end - timedelta(microseconds=1)).date()
    options = "".join(
        f'<option value="{g}"{" selected" if g == view.group_by else ""}>{g}</option>'
        for g in GROUPINGS
    )
    today = view.now.date()
    presets = " ".join(
        f'<a href="?from={(today - timedelta(days=days - 1)).isoformat()}&amp;to='
        f'{today.isoformat()}&amp;group={view.group_by}">{label}</a>'
        for label, days in PRESETS
    )
    return (
        '<form class="controls" method="get" action="/dashboard">'
        f'<label>From <input type="date" name="from" value="{view.start.date().isoformat()}">'
        f'</label><label>To <input type="date" name="to" value="{last_day.isoformat()}"></label>'
        f'<label>Group by <select name="group">{options}</select></label>'
        f'<button type="submit" id="apply">Show</button><span class="presets">{presets}</span>'
        "</form>"
    )


def _costs_cell(item: dict[str, Any], field: str) -> str:
    lines = [money(c[field], c["currency"]) for c in item["costs"] if c[field] is not None]
    return "<br>".join(esc(x) for x in lines) or "-"


def _cohort_table(report: dict[str, Any]) -> str:
    head = (
        "<tr><th>group</th><th>visitors</th><th>leads</th><th>MQL</th><th>SQL</th>"
        "<th>prospects</th><th>clients</th><th>opps</th><th>won</th><th>lead→MQL</th>"
        "<th>MQL→SQL</th><th>SQL→opp</th><th>lead→opp</th><th>opp→won</th><th>spend</th>"
        "<th>per lead</th><th>per SQL</th><th>per opp</th><th>per client</th></tr>"
    )
    body = []
    for i in [*report["items"], report["totals"]]:
        cls = ' class="total"' if i is report["totals"] else ""
        body.append(
            f'<tr{cls} data-group="{esc(i["key"])}"><th>{esc(i["key"])}</th>'
            f"<td>{num(i['visitors'])}</td><td>{num(i['leads'])}</td><td>{num(i['mqls'])}</td>"
            f"<td>{num(i['sqls'])}</td><td>{num(i['prospects'])}</td>"
            f"<td>{num(i['clients'])}</td><td>{num(i['opportunities'])}</td>"
            f"<td>{num(i['won'])}</td><td>{pct(i['mql_rate'])}</td>"
            f"<td>{pct(i['mql_to_sql_rate'])}</td><td>{pct(i['sql_to_opportunity_rate'])}</td>"
            f"<td>{pct(i['opportunity_rate'])}</td><td>{pct(i['win_rate'])}</td>"
            f"<td>{_costs_cell(i, 'spend')}</td><td>{_costs_cell(i, 'per_lead')}</td>"
            f"<td>{_costs_cell(i, 'per_sql')}</td><td>{_costs_cell(i, 'per_opportunity')}</td>"
            f"<td>{_costs_cell(i, 'per_client')}</td></tr>"
        )
    return f'<div class="scroll"><table id="cohorts">{head}{"".join(body)}</table></div>'


def _sla_table(groups: Sequence[dict[str, Any]], kind: str) -> str:
    head = (
        f"<tr><th>{kind}</th><th>assigned</th><th>median</th><th>p90</th><th>met</th>"
        "<th>warned</th><th>breached</th><th>escalated</th><th>open</th><th>attainment</th></tr>"
    )
    rows = "".join(
        f'<tr data-{kind}="{esc(g["key"])}"><th>{esc(g.get("name") or g["key"])}</th>'
        f"<td>{num(g['assignments'])}</td><td>{duration(g['median_seconds'])}</td>"
        f"<td>{duration(g['p90_seconds'])}</td><td>{num(g['met'])}</td>"
        f"<td>{num(g['warned'])}</td><td>{num(g['breached'])}</td>"
        f"<td>{num(g['escalated'])}</td><td>{num(g['open'])}</td>"
        f"<td>{pct(g['attainment'])}</td></tr>"
        for g in groups
    )
    return f'<div class="scroll"><table>{head}{rows}</table></div>'


def _waiting(speed: dict[str, Any]) -> str:
    items = speed.get("waiting") or []
    if not items:
        return '<p class="empty" id="no-waiting">No hot lead is waiting for a first touch.</p>'
    rows = "".join(
        f"<tr><td>{esc(w['lead'])}</td><td>{esc(w['company'])}</td><td>{esc(w['owner'])}</td>"
        f'<td>{esc(w["team"])}</td><td class="countdown" data-due="{esc(w["due_at"])}">'
        f"{duration(w['seconds_left'])}</td></tr>"
        for w in items
    )
    return (
        '<div class="scroll"><table id="waiting"><tr><th>lead</th><th>company</th><th>owner</th>'
        f"<th>team</th><th>time left</th></tr>{rows}</table></div>"
    )


def _speed_section(speed: dict[str, Any] | None) -> str:
    if speed is None:
        return (
            '<section class="card wide"><h2>Speed to lead</h2><p class="empty" '
            'id="routing-down">Routing is not reachable: speed to lead, SLAs and the hot-lead '
            "queue are not shown.</p></section>"
        )
    hist = [(b["label"], b["count"]) for b in speed["histogram"]]
    keys = ("met", "warned", "breached", "escalated", "open")
    return (
        '<section class="card"><h2>Time to first touch</h2>'
        f"{columns_svg(hist)}</section>"
        '<section class="card"><h2>SLA attainment over time</h2>'
        f"{stacked_svg(speed['daily'], keys)}</section>"
        '<section class="card wide"><h2>Hot leads waiting for a first touch</h2>'
        f"{_waiting(speed)}</section>"
        '<section class="card wide"><h2>Speed to lead by team</h2>'
        f"{_sla_table(speed['by_team'], 'team')}<h3>By rep</h3>"
        f"{_sla_table(speed['by_rep'], 'rep')}</section>"
    )


def _tiles(report: dict[str, Any], speed: dict[str, Any] | None) -> str:
    t = report["totals"]
    cpl = "; ".join(money(c["per_lead"], c["currency"]) for c in t["costs"]) or "-"
    overall = (speed or {}).get("overall") or {}
    tiles = [
        _tile("leads", "Leads", num(t["leads"]), f"{num(t['visitors'])} anonymous visitors"),
        _tile("mqls", "MQL", num(t["mqls"]), pct(t["mql_rate"]) + " of leads"),
        _tile("sqls", "SQL", num(t["sqls"]), pct(t["sql_rate"]) + " of leads"),
        _tile("opportunities", "Opportunities", num(t["opportunities"])),
        _tile("opportunity_rate", "Lead → opportunity", pct(t["opportunity_rate"])),
        _tile("win_rate", "Opportunity → won", pct(t["win_rate"]), f"{num(t['won'])} won"),
        _tile("cost_per_lead", "Cost per lead", cpl),
        _tile(
            "median_first_touch",
            "Median first touch",
            duration(overall.get("median_seconds")) if speed else "-",
            f"p90 {duration(overall.get('p90_seconds'))}" if speed else "",
        ),
        _tile(
            "sla_attainment",
            "SLA attainment",
            pct(overall.get("attainment")) if speed else "-",
            f"{num(overall.get('breached', 0) + overall.get('escalated', 0))} breached"
            if speed
            else "",
        ),
    ]
    return f'<div class="tiles">{"".join(tiles)}</div>'


def _nurture_section(nurture: dict[str, Any] | None) -> str:
    """Nurture tracks: who is in, how they left, how many reached MQL and SQL."""
    if nurture is None:
        body = '<p class="empty">Routing did not answer: nurture figures unavailable.</p>'
    elif not nurture.get("items"):
        body = '<p class="empty">No nurture tracks configured (routing.nurture).</p>'
    else:
        rows = []
        for track in nurture["items"]:
            k = track["kpis"]
            exits = ", ".join(f"{esc(r)} {n}" for r, n in sorted(k["exited"].items())) or "none"
            rows.append(
                f"<tr><td>{esc(track['name'])}</td><td>{len(track['steps'])}</td>"
                f"<td>{k['enrolled']}</td><td>{k['active']}</td><td>{exits}</td>"
                f"<td>{k['converted_mql']}</td><td>{k['converted_sql']}</td>"
                f"<td>{pct(k['conversion_rate'])}</td>"
                f"<td>{duration(k['median_seconds_to_sql'])}</td></tr>"
            )
        body = (
            '<div class="scroll"><table id="nurture"><thead><tr><th>track</th><th>steps</th>'
            "<th>enrolled</th><th>active</th><th>exited by reason</th><th>→ MQL</th>"
            "<th>→ SQL</th><th>SQL / exited</th><th>median to SQL</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table></div>"
        )
    return f'<section class="card wide"><h2>Nurture tracks</h2>{body}</section>'


def _stage_grid(counts: Sequence[tuple[str, str, int]]) -> str:
    grid = {(s, t): n for s, t, n in counts}
    temps = ("hot", "warm", "cold")
    rows = "".join(
        f"<tr><th>{s}</th>" + "".join(f"<td>{num(grid.get((s, t), 0))}</td>" for t in temps)
        for s in ("SQL", "MQL", "IQL")
    )
    return f"<table><tr><th></th>{''.join(f'<th>{t}</th>' for t in temps)}</tr>{rows}</table>"


def _newest(sqls: Sequence[Any]) -> str:
    rows = "".join(
        f"<tr><td>{esc(x.email or x.key)}</td><td>{esc(x.company)}</td><td>{esc(x.temperature)}"
        f"</td><td>{x.total}</td><td>{esc((x.owner or {}).get('name'))}</td>"
        f"<td>{esc(x.status)}</td></tr>"
        for x in sqls
    )
    return (
        '<div class="scroll"><table><tr><th>lead</th><th>company</th><th>temperature</th>'
        f"<th>score</th><th>owner</th><th>status</th></tr>{rows}</table></div>"
    )


CSS = """
*{box-sizing:border-box}body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f4f6fa;
color:#1d2433}header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;
padding:.8rem 1rem;background:#1d2433;color:#fff}header h1{font-size:1.2rem;margin:0;flex:1}
header form{margin:0}header small{opacity:.7}main{padding:1rem;max-width:1400px;margin:auto}
.controls{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end;margin-bottom:1rem}
.controls label{display:flex;flex-direction:column;font-size:.8rem}.presets a{margin-right:.5rem}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.6rem;
margin-bottom:1rem}.tile{background:#fff;border-radius:8px;padding:.6rem .8rem;
box-shadow:0 1px 2px #0002}.tile span{display:block;font-size:.8rem;color:#556}
.tile b{display:block;font-size:1.4rem}.tile small{color:#667}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));gap:1rem}
.card{background:#fff;border-radius:8px;padding:.8rem 1rem;box-shadow:0 1px 2px #0002;
min-width:0}.wide{grid-column:1/-1}h2{font-size:1.05rem;margin:.2rem 0 .6rem}
h3{font-size:.95rem}.chart{width:100%;height:auto;font-size:13px}
.chart .count{font-weight:700}.chart .rate{fill:#556;font-size:12px}
.chart .small{font-size:11px;fill:#556}.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.85rem}
td,th{border-bottom:1px solid #e3e6ee;padding:.3rem .5rem;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}tr.total{font-weight:700}.empty{color:#778}
.legend{font-size:.8rem}.key{margin-right:.8rem}.key i{display:inline-block;width:.8rem;
height:.8rem;margin-right:.3rem;vertical-align:middle;border-radius:2px}
.countdown.soon{color:#b36b00;font-weight:700}.countdown.late{color:#c62828;font-weight:700}
@media (max-width:600px){main{padding:.5rem}.tile b{font-size:1.15rem}}
"""

SCRIPT = """
(function(){
  var skew = Date.parse(document.body.dataset.now) - Date.now();
  function fmt(s){var a=Math.abs(s),t;
    if(a<3600){t=Math.floor(a/60)+':'+('0'+Math.floor(a%60)).slice(-2);}
    else{t=Math.floor(a/3600)+' h '+('0'+Math.floor(a%3600/60)).slice(-2)+' min';}
    return (s<0?'overdue ':'')+t;}
  function tick(){var now=Date.now()+skew;
    document.querySelectorAll('[data-due]').forEach(function(e){
      var s=Math.round((Date.parse(e.dataset.due)-now)/1000);
      e.textContent=fmt(s);e.className='countdown'+(s<0?' late':s<300?' soon':'');});}
  tick();setInterval(tick,1000);
  setTimeout(function(){location.reload();}, RELOAD_MS);
})();
"""


def render(
    view: View,
    report: dict[str, Any],
    speed: dict[str, Any] | None,
    counts: Sequence[tuple[str, str, int]],
    sqls: Sequence[Any],
    spend_by_source: dict[str, Any] | None,
    nonce: str,
    nurture: dict[str, Any] | None = None,
) -> str:
    """The whole page."""
    t = report["totals"]
    steps = [
        ("Leads", t["leads"]),
        ("MQL", t["mqls"]),
        ("SQL", t["sqls"]),
        ("Opportunities", t["opportunities"]),
        ("Won", t["won"]),
    ]
    status_steps = [("Leads", t["leads"]), ("Prospects", t["prospects"]), ("Clients", t["clients"])]
    cpl_rows = []
    for item in (spend_by_source or report)["items"]:
        for c in item["costs"]:
            if c["per_lead"] is not None:
                label = f"{item['key']} ({c['currency']})"
                cpl_rows.append((label, c["per_lead"], money(c["per_lead"], c["currency"])))
    cpl_rows.sort(key=lambda r: -r[1])
    period = f"{view.start.date().isoformat()} → {(view.end - timedelta(microseconds=1)).date()}"
    body = f"""<header><h1>Leadflow dashboard</h1><small>{esc(period)} · refreshes every
{REFRESH_SECONDS} s</small><form method="post" action="/logout"><button id="logout">Log out
</button></form></header><main>{_controls(view)}{_tiles(report, speed)}<div class="grid">
<section class="card"><h2>Funnel: IQL → MQL → SQL → opportunity → won</h2>
{funnel_svg(steps)}</section>
<section class="card"><h2>Status: lead → prospect → client</h2>{funnel_svg(status_steps)}
<h3>Leads by stage and temperature (now)</h3>{_stage_grid(counts)}</section>
<section class="card"><h2>Cost per lead by source</h2>{hbar_svg(cpl_rows)}</section>
{_speed_section(speed)}
<section class="card wide"><h2>Cohorts by {esc(view.group_by)}</h2>{_cohort_table(report)}
<p class="empty">Counts are known leads created in the period and what they reached since;
MQL→SQL and SQL→opp are of the leads that became MQL / SQL in the period.</p></section>
{_nurture_section(nurture)}
<section class="card wide"><h2>Newest sales-qualified leads</h2>{_newest(sqls)}</section>
</div></main>"""
    script = SCRIPT.replace("RELOAD_MS", str(REFRESH_SECONDS * 1000))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Leadflow dashboard</title><style>{CSS}</style></head>"
        f'<body data-now="{rfc3339(view.now)}">{body}'
        f'<script nonce="{nonce}">{script}</script></body></html>'
    )


def day_window(start: date, last_day: date) -> tuple[date, date]:
    """A period of whole days, the last one included."""
    return start, last_day + timedelta(days=1)
