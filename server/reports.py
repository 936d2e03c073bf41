"""Report queries for plant managers: yield, energy per cell, alert counts, from either store.

One small interface, `Reports`, with two implementations that answer the same questions the
same way: `InfluxQLReports` asks InfluxDB in InfluxQL over ``/query`` (which 1.x answers, 2.x
through its v1 compatibility API with a token and a database/retention-policy mapping, and
3.x), and `SqliteReports` asks the embedded series file in SQL. The definitions, in both:

* **yield** per line: cells with ``good = true`` over all cells finished in the window.
* **energy per cell** per line: the increase of every meter's import register
  (``energy_kwh``) minus the increase of its export register (``export_kwh``, energy fed
  back by formation), summed over the line's meters, divided by its cells finished in the
  window. The increase is ``max - min`` within the window (InfluxQL ``SPREAD``), so energy
  between the last reading before the window and its first reading inside is not counted.
* **alert counts** per station and rule: detections, and distinct alerts they counted
  towards (``alert_id`` is a field, never a tag).

Windows are ``[start_ns, end_ns)`` in nanoseconds since the epoch.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from models.plant import InfluxConfig
from server.embedded import SeriesFile

__all__ = [
    "AlertCount",
    "EnergyPerCell",
    "InfluxQLReports",
    "ReportError",
    "Reports",
    "SqliteReports",
    "Yield",
]


class ReportError(RuntimeError):
    """A report query failed; the message names the query and the store's answer."""


@dataclass(frozen=True, slots=True)
class Yield:
    """Good cells over all cells of one line in a window (``ratio`` None without cells)."""

    line: str
    good: int
    total: int

    @property
    def ratio(self) -> float | None:
        return self.good / self.total if self.total else None


@dataclass(frozen=True, slots=True)
class EnergyPerCell:
    """Net energy of one line's meters and the cells it finished in a window."""

    line: str
    energy_kwh: float
    cells: int

    @property
    def kwh_per_cell(self) -> float | None:
        return self.energy_kwh / self.cells if self.cells else None


@dataclass(frozen=True, slots=True)
class AlertCount:
    """Detections of one station and rule in a window, and the distinct alerts among them."""

    station: str
    rule: str
    detections: int
    alerts: int


class Reports(Protocol):
    """The report questions; each implementation answers them from its store."""

    async def yield_by_line(self, start_ns: int, end_ns: int) -> list[Yield]: ...

    async def energy_per_cell(self, start_ns: int, end_ns: int) -> list[EnergyPerCell]: ...

    async def alert_counts(self, start_ns: int, end_ns: int) -> list[AlertCount]: ...


def _combine_energy(
    meters: list[tuple[str, float | None, float | None]], cells: dict[str, int]
) -> list[EnergyPerCell]:
    """Per line: sum of (import increase - export increase) of its meters, and its cells."""
    energy: dict[str, float] = defaultdict(float)
    for line, imported, exported in meters:
        energy[line] += (imported or 0.0) - (exported or 0.0)
    return [EnergyPerCell(line, energy[line], cells.get(line, 0)) for line in sorted(energy)]


class InfluxQLReports:
    """Reports from InfluxDB through InfluxQL on ``/query`` (1.x, 2.x v1 API, 3.x).

    Version 1 configurations authenticate with user and password, version 2 with the token;
    the database queried is ``database`` (2.x needs a DBRP mapping to the bucket).
    """

    def __init__(self, cfg: InfluxConfig) -> None:
        if cfg.url is None:
            raise ValueError("InfluxQLReports needs influxdb.url to be set")
        self.cfg = cfg
        self._headers: dict[str, str] = {}
        self._auth: tuple[str, str] | None = None
        if cfg.version == 2 and cfg.token is not None:
            self._headers["Authorization"] = f"Token {cfg.token.get_secret_value()}"
        elif cfg.username:
            pw = cfg.password.get_secret_value() if cfg.password is not None else ""
            self._auth = (cfg.username, pw)

    async def _query(self, q: str) -> list[dict[str, Any]]:
        params = {"db": self.cfg.database, "q": q, "epoch": "ns"}
        if self.cfg.retention_policy:
            params["rp"] = self.cfg.retention_policy
        try:
            async with httpx.AsyncClient(
                base_url=str(self.cfg.url),
                timeout=self.cfg.timeout_s,
                auth=self._auth,
                headers=self._headers,
            ) as c:
                r = await c.get("/query", params=params)
        except httpx.HTTPError as e:
            raise ReportError(f"{q}: {type(e).__name__}: {e}") from None
        if r.status_code != 200:
            raise ReportError(f"{q}: HTTP {r.status_code}: {r.text.strip()[:300]}")
        result = r.json()["results"][0]
        if "error" in result:
            raise ReportError(f"{q}: {result['error']}")
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    @staticmethod
    def _where(start_ns: int, end_ns: int) -> str:
        return f"WHERE time >= {int(start_ns)} AND time < {int(end_ns)}"

    async def _cells(self, start_ns: int, end_ns: int) -> tuple[dict[str, int], dict[str, int]]:
        w = self._where(start_ns, end_ns)
        total, good = await asyncio.gather(
            self._query(f'SELECT count("cell_id") FROM "cell" {w} GROUP BY "line"'),
            self._query(
                f'SELECT count("cell_id") FROM "cell" {w} AND "good" = true GROUP BY "line"'
            ),
        )
        return _per_line(total), _per_line(good)

    async def yield_by_line(self, start_ns: int, end_ns: int) -> list[Yield]:
        total, good = await self._cells(start_ns, end_ns)
        return [Yield(line, good.get(line, 0), n) for line, n in sorted(total.items())]

    async def energy_per_cell(self, start_ns: int, end_ns: int) -> list[EnergyPerCell]:
        w = self._where(start_ns, end_ns)
        series = await self._query(
            f'SELECT spread("energy_kwh"), spread("export_kwh") FROM "energy" {w} '
            'GROUP BY "line", "equipment"'
        )
        meters = [(s["tags"]["line"], s["values"][0][1], s["values"][0][2]) for s in series]
        total, _ = await self._cells(start_ns, end_ns)
        return _combine_energy(meters, total)

    async def alert_counts(self, start_ns: int, end_ns: int) -> list[AlertCount]:
        series = await self._query(
            'SELECT count("value"), count(distinct("alert_id")) FROM "detection" '
            f'{self._where(start_ns, end_ns)} GROUP BY "station", "rule"'
        )
        counts = [
            AlertCount(
                s["tags"]["station"],
                s["tags"]["rule"],
                int(s["values"][0][1] or 0),
                int(s["values"][0][2] or 0),
            )
            for s in series
        ]
        return sorted(counts, key=lambda a: (a.station, a.rule))


def _per_line(series: list[dict[str, Any]]) -> dict[str, int]:
    return {s["tags"]["line"]: int(s["values"][0][1] or 0) for s in series}


class SqliteReports:
    """Reports from the embedded series file, in SQL (the same definitions as InfluxQL)."""

    def __init__(self, series: SeriesFile) -> None:
        self.series = series

    async def _rows(self, sql: str, start_ns: int, end_ns: int) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self.series.query, sql, (int(start_ns), int(end_ns)))

    async def _cells(self, start_ns: int, end_ns: int) -> list[tuple[Any, ...]]:
        return await self._rows(
            "SELECT line, count(cell_id), count(CASE WHEN good = 1 THEN cell_id END) "
            "FROM cell WHERE time >= ? AND time < ? GROUP BY line ORDER BY line",
            start_ns,
            end_ns,
        )

    async def yield_by_line(self, start_ns: int, end_ns: int) -> list[Yield]:
        return [
            Yield(line, good, total)
            for line, total, good in await self._cells(start_ns, end_ns)
            if total
        ]

    async def energy_per_cell(self, start_ns: int, end_ns: int) -> list[EnergyPerCell]:
        meters = await self._rows(
            "SELECT line, max(energy_kwh) - min(energy_kwh), max(export_kwh) - min(export_kwh) "
            "FROM energy WHERE time >= ? AND time < ? GROUP BY line, equipment",
            start_ns,
            end_ns,
        )
        cells = {line: total for line, total, _ in await self._cells(start_ns, end_ns)}
        return _combine_energy([(r[0], r[1], r[2]) for r in meters], cells)

    async def alert_counts(self, start_ns: int, end_ns: int) -> list[AlertCount]:
        rows = await self._rows(
            "SELECT station, rule, count(value), count(DISTINCT alert_id) FROM detection "
            "WHERE time >= ? AND time < ? GROUP BY station, rule",
            start_ns,
            end_ns,
        )
        counts = [AlertCount(r[0], r[1], r[2], r[3]) for r in rows if r[2] or r[3]]
        return sorted(counts, key=lambda a: (a.station, a.rule))
