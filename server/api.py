"""The HTTP API and the dashboard page of the server.

A FastAPI app over the server's live state: health with counters, alerts with their
acknowledge/close actions, the latest SPC statistics per series, and one self-contained HTML
page (inline CSS and JS, no third-party assets, so it works on a plant network without internet
access). The page is rendered with the current alerts and series on the server, so it is useful
without JavaScript, and its script refreshes both tables every 2 s. Every endpoint is ``async``
so it runs on the asyncio thread that owns the SQLite connection and the counters.
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from models.messages import Stats
from server.alerts import Alert, AlertBook, AlertStateError, AlertStatus, UnknownAlertError
from server.ingest import Ingest
from server.writer import SeriesWriter

__all__ = ["ApiState", "create_app"]


@dataclass(frozen=True, slots=True)
class ApiState:
    """What the API reads and acts on."""

    alerts: AlertBook
    ingest: Ingest
    writer: SeriesWriter | None
    title: str = "cellwatch"


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def _series(s: Stats) -> dict[str, Any]:
    k = s.key
    return {
        "tag": str(k),
        "line": k.line,
        "station": k.station,
        "equipment": k.equipment,
        "param": k.param,
        "ts": s.ts_end,
        "count": s.count,
        "bad": s.bad,
        "mean": _num(s.mean),
        "statistic": _num(s.statistic),
        "lcl": _num(s.lcl),
        "ucl": _num(s.ucl),
    }


def _health(state: ApiState) -> dict[str, Any]:
    now = time.monotonic()
    edges = {
        edge_id: {
            "age_s": round(now - rep.received_monotonic, 3),
            "ts": rep.status.ts,
            "uptime_s": rep.status.uptime_s,
            "published": rep.status.published,
            "pending": rep.status.pending,
            "dropped": rep.status.dropped,
            "detections": rep.status.detections,
            "sources": [
                {
                    "source": s.source,
                    "state": s.state,
                    "readings": s.readings,
                    "rejected": s.rejected,
                    "bad_quality": s.bad_quality,
                    "last_error": s.last_error,
                }
                for s in rep.status.sources
            ],
        }
        for edge_id, rep in sorted(state.ingest.edges.items())
    }
    return {
        "status": "ok",
        "broker_connected": state.ingest.connected,
        "counters": state.ingest.counters(),
        "series": None if state.writer is None else state.writer.counters(),
        "edges": edges,
    }


def create_app(state: ApiState) -> FastAPI:
    """The FastAPI app serving ``state``; run it with uvicorn (``lifespan="off"``)."""
    app = FastAPI(title=state.title, docs_url=None, redoc_url=None)

    def transition(alert_id: int, action: str) -> Alert:
        try:
            if action == "ack":
                return state.alerts.acknowledge(alert_id)
            return state.alerts.close(alert_id)
        except UnknownAlertError as e:
            raise HTTPException(status_code=404, detail=str(e)) from None
        except AlertStateError as e:
            raise HTTPException(status_code=409, detail=str(e)) from None

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return _health(state)

    @app.get("/api/alerts")
    async def alerts(
        status: Literal["open", "acknowledged", "closed", "all"] = "all",
    ) -> list[dict[str, Any]]:
        wanted = None if status == "all" else AlertStatus(status)
        return [a.as_json() for a in state.alerts.select(wanted)]

    @app.post("/api/alerts/{alert_id}/ack")
    async def ack(alert_id: int) -> dict[str, Any]:
        return transition(alert_id, "ack").as_json()

    @app.post("/api/alerts/{alert_id}/close")
    async def close(alert_id: int) -> dict[str, Any]:
        return transition(alert_id, "close").as_json()

    @app.get("/api/latest")
    async def latest() -> list[dict[str, Any]]:
        return [_series(s) for _, s in sorted(state.ingest.latest.items(), key=lambda i: str(i[0]))]

    @app.get("/", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        live = [a for a in state.alerts.select() if a.active]
        series = sorted(state.ingest.latest.values(), key=lambda s: str(s.key))
        page = (
            _PAGE.replace("{{title}}", html.escape(state.title))
            .replace("{{alerts}}", "".join(_alert_row(a) for a in live) or _NONE_ALERTS)
            .replace("{{series}}", "".join(_series_row(s) for s in series) or _NONE_SERIES)
        )
        return HTMLResponse(page)

    return app


def _time(ts: float) -> str:
    """Wall time for the page; a time outside the calendar (a bad device clock) shows as is."""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return f"invalid time {ts!r}"


def _fmt(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _alert_row(a: Alert) -> str:
    cells = (
        str(a.key),
        a.rule,
        a.status.value,
        _time(a.first_ts),
        _time(a.last_ts),
        str(a.count),
        a.message,
    )
    tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
    return f'<tr class="{a.status.value}">{tds}<td></td></tr>'


def _beyond(s: Stats) -> bool:
    """True when the series' chart statistic lies outside its control limits right now."""
    if s.statistic is None or s.lcl is None or s.ucl is None:
        return False
    return s.statistic > s.ucl or s.statistic < s.lcl


def _series_row(s: Stats) -> str:
    cells = (str(s.key), _fmt(s.mean), _fmt(s.statistic), _fmt(s.lcl), _fmt(s.ucl), str(s.count))
    cls = ' class="beyond"' if _beyond(s) else ""
    return f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


_NONE_ALERTS = '<tr><td colspan="8" class="none">No live alerts.</td></tr>'
_NONE_SERIES = '<tr><td colspan="6" class="none">No statistics received yet.</td></tr>'

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
  h1 { font-size: 1.4em; margin: 0 0 .2em; }
  h2 { font-size: 1.1em; margin: 1.5em 0 .4em; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; }
  th { background: #eee; }
  tr.open td:first-child { border-left: 4px solid #c62828; }
  tr.acknowledged td:first-child { border-left: 4px solid #f9a825; }
  td.none { color: #777; font-style: italic; }
  tr.beyond td { background: #fdecea; font-weight: 600; }
  #status { color: #777; }
  button { font: inherit; margin-right: .3em; }
</style>
</head>
<body>
<h1>{{title}}</h1>
<div id="status">Refreshes every 2 s.</div>
<h2>Live alerts</h2>
<table>
  <thead><tr><th>Tag</th><th>Rule</th><th>Status</th><th>First</th><th>Last</th>
  <th>Count</th><th>Message</th><th></th></tr></thead>
  <tbody id="alerts">{{alerts}}</tbody>
</table>
<h2>Series</h2>
<table>
  <thead><tr><th>Tag</th><th>Mean</th><th>Statistic</th><th>LCL</th><th>UCL</th>
  <th>Count</th></tr></thead>
  <tbody id="series">{{series}}</tbody>
</table>
<script>
"use strict";
function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text;
  tr.appendChild(td);
  return td;
}
function when(ts) { return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19); }
function num(x) { return x === null ? "" : Number(x.toPrecision(4)).toString(); }
function empty(body, span, text) {
  const tr = document.createElement("tr");
  const td = cell(tr, text);
  td.colSpan = span;
  td.className = "none";
  body.replaceChildren(tr);
}
async function act(id, action) {
  await fetch(`/api/alerts/${id}/${action}`, { method: "POST" });
  refresh();
}
async function refresh() {
  try {
    const [alerts, series] = await Promise.all([
      fetch("/api/alerts").then((r) => r.json()),
      fetch("/api/latest").then((r) => r.json()),
    ]);
    const live = alerts.filter((a) => a.status !== "closed");
    const ab = document.getElementById("alerts");
    if (live.length === 0) empty(ab, 8, "No live alerts.");
    else ab.replaceChildren(...live.map((a) => {
      const tr = document.createElement("tr");
      tr.className = a.status;
      for (const t of [a.tag, a.rule, a.status, when(a.first_ts), when(a.last_ts),
                       String(a.count), a.message]) cell(tr, t);
      const td = cell(tr, "");
      for (const [label, action] of [["Ack", "ack"], ["Close", "close"]]) {
        if (action === "ack" && a.status !== "open") continue;
        const b = document.createElement("button");
        b.textContent = label;
        b.onclick = () => act(a.id, action);
        td.appendChild(b);
      }
      return tr;
    }));
    const sb = document.getElementById("series");
    if (series.length === 0) empty(sb, 6, "No statistics received yet.");
    else sb.replaceChildren(...series.map((s) => {
      const tr = document.createElement("tr");
      if (s.statistic !== null && s.lcl !== null && s.ucl !== null &&
          (s.statistic > s.ucl || s.statistic < s.lcl)) tr.className = "beyond";
      for (const t of [s.tag, num(s.mean), num(s.statistic), num(s.lcl), num(s.ucl),
                       String(s.count)]) cell(tr, t);
      return tr;
    }));
    document.getElementById("status").textContent =
      "Updated " + new Date().toLocaleTimeString() + "; refreshes every 2 s.";
  } catch (err) {
    document.getElementById("status").textContent = "Server unreachable: " + err;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""
