"""``cellwatch fit``: fit a station's multivariate model on a baseline file and write its artifact.

Process engineers pick an in-control period, export it (one column per variable, optionally a
time column), and run this command; the artifact it writes (``OUT.npz`` + ``OUT.json``) is what
gateways load. Variables are the CSV columns given with ``--columns``, else the columns that
name a parameter of ``--station`` (``param`` or ``equipment/param``, ``equipment.param``), else
every numeric column. Units come from the plant file's parameters. The fitting itself is
`server.mvfit.fit_model`; this module reads the file, chooses the columns and reports.

``--from influxdb`` reads the baseline from the plant file's InfluxDB instead (InfluxQL on
``/query``: 1.x, and 2.x or 3.x through their v1 API): the good-quality ``telemetry`` of every
series of ``--station`` between ``--start`` and ``--end``, one column per ``equipment/param``,
readings in one ``--align-s`` slot forming a row, as the gateway builds its rows.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from cellwatch.errors import CliError
from models.plant import PlantConfig, StationConfig

__all__ = ["read_baseline", "read_influx", "run_fit", "station_units"]

#: Column names read as the time of a row (kept for the training window, not modelled).
TIME_COLUMNS = ("time", "ts", "timestamp")


def read_baseline(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Column names, a float ``(rows, columns)`` table (empty cells NaN) and the time column
    (empty when there is none) of a CSV file with a header row."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or e}") from None
    if len(rows) < 2:
        raise CliError(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    tcol = next((i for i, h in enumerate(header) if h.lower() in TIME_COLUMNS), None)
    names = [h for i, h in enumerate(header) if i != tcol]
    table = np.full((len(rows) - 1, len(names)), np.nan)
    times: list[str] = []
    for r, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise CliError(f"{path}:{r + 2}: {len(row)} fields, header has {len(header)}")
        cells = [c for i, c in enumerate(row) if i != tcol]
        for j, cell in enumerate(cells):
            text = cell.strip()
            if not text:
                continue
            try:
                table[r, j] = float(text)
            except ValueError:
                raise CliError(
                    f"{path}:{r + 2}: column {names[j]!r} has {text!r}, not a number"
                ) from None
        if tcol is not None:
            times.append(row[tcol].strip())
    return names, table, times


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def read_influx(
    cfg: PlantConfig, ref: str, start: str, end: str, align_s: float
) -> tuple[list[str], np.ndarray, list[str]]:
    """Columns ``equipment/param``, a ``(rows, columns)`` table (NaN where a series had no
    reading in a slot) and the slot times (RFC 3339) of a station's telemetry in InfluxDB."""
    import datetime as dt

    import httpx

    influx = cfg.influxdb
    if influx.url is None:
        raise CliError("--from influxdb needs influxdb.url in the plant file")
    line_id, _, station_id = ref.partition("/")
    station = _station(cfg, ref)
    if not station_id:
        line_id = next(ln.id for ln in cfg.lines if station in ln.stations)
        station_id = station.id
    declared = {p.id for p in station.params}
    query = (
        'SELECT "value" FROM "telemetry" WHERE "site" = '
        + _quote(cfg.site.id)
        + ' AND "line" = '
        + _quote(line_id)
        + ' AND "station" = '
        + _quote(station_id)
        + " AND \"quality\" = 'good' AND time >= "
        + _quote(start)
        + " AND time < "
        + _quote(end)
        + ' GROUP BY "equipment", "param"'
    )
    params = {"db": influx.database, "q": query, "epoch": "ns"}
    if influx.retention_policy:
        params["rp"] = influx.retention_policy
    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    if influx.version == 2 and influx.token is not None:
        headers["Authorization"] = f"Token {influx.token.get_secret_value()}"
    elif influx.username:
        pw = influx.password.get_secret_value() if influx.password is not None else ""
        auth = (influx.username, pw)
    try:
        r = httpx.get(
            f"{influx.url}/query",
            params=params,
            headers=headers,
            auth=auth,
            timeout=influx.timeout_s,
        )
    except httpx.HTTPError as e:
        raise CliError(f"InfluxDB {influx.url}: {type(e).__name__}: {e}") from None
    if r.status_code != 200:
        raise CliError(f"InfluxDB {influx.url}: HTTP {r.status_code}: {r.text.strip()[:300]}")
    result = r.json()["results"][0]
    if "error" in result:
        raise CliError(f"InfluxDB {influx.url}: {result['error']}")
    slot_ns = int(align_s * 1e9)
    columns: dict[str, dict[int, float]] = {}
    for series in result.get("series", []):
        tags = series.get("tags", {})
        if tags.get("param") not in declared:
            continue
        name = f"{tags['equipment']}/{tags['param']}"
        col = columns.setdefault(name, {})
        for t_ns, value in series["values"]:
            if value is not None:
                col[int(t_ns) // slot_ns] = float(value)
    if not columns:
        raise CliError(
            f"InfluxDB {influx.url}: no good telemetry of station {ref} between {start} and {end}"
        )
    names = sorted(columns)
    slots = sorted({k for col in columns.values() for k in col})
    table = np.full((len(slots), len(names)), np.nan)
    where = {k: i for i, k in enumerate(slots)}
    for j, name in enumerate(names):
        for k, value in columns[name].items():
            table[where[k], j] = value
    times = [dt.datetime.fromtimestamp(k * slot_ns / 1e9, dt.UTC).isoformat() for k in slots]
    return names, table, times


def _param(column: str) -> str:
    return column.replace(".", "/").rsplit("/", 1)[-1]


def station_units(station: StationConfig | None, columns: list[str]) -> list[str]:
    """Each column's unit from the station's parameter of that name ("" when unknown)."""
    units = {p.id: p.unit for p in station.params} if station else {}
    return [units.get(_param(c), "") for c in columns]


def _station(cfg: PlantConfig, ref: str) -> StationConfig:
    line_id, _, station_id = ref.partition("/")
    for line in cfg.lines:
        for st in line.stations:
            if (line.id == line_id and st.id == station_id) or (not station_id and st.id == ref):
                return st
    raise CliError(f"no station {ref!r} in the plant file (use LINE/STATION)")


def run_fit(args: argparse.Namespace, cfg: PlantConfig) -> int:
    """The ``fit`` sub-command."""
    from models.mvartifact import save_model
    from server.mvfit import FitOptions, fit_model

    source = str(args.source)
    if source == "influxdb":
        if not (args.station and args.start and args.end):
            raise CliError("--from influxdb needs --station, --start and --end")
        names, table, times = read_influx(cfg, args.station, args.start, args.end, args.align_s)
        source = f"influxdb {cfg.influxdb.url} {args.start}..{args.end}"
    elif "://" in source:
        raise CliError(f"{source}: give a CSV file or 'influxdb' (the plant file's InfluxDB)")
    else:
        names, table, times = read_baseline(Path(source))
    station = _station(cfg, args.station) if args.station else None
    if args.columns:
        wanted = [c.strip() for c in args.columns.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in names]
        if unknown:
            raise CliError(f"{source}: no column {unknown[0]!r} (columns: {', '.join(names)})")
    elif station:
        params = {p.id for p in station.params}
        wanted = [c for c in names if _param(c) in params]
        if not wanted:
            raise CliError(f"{source}: no column names a parameter of station {args.station}")
    else:
        wanted = names
    x = table[:, [names.index(c) for c in wanted]]
    components: float | int | str = args.components
    if components != "cv":
        value = float(components)
        components = int(value) if value >= 1 and value.is_integer() else value
    try:
        opts = FitOptions(
            kind=args.kind,
            lags=args.lags,
            components=components,
            alpha=args.alpha,
            limits=args.limits,
            t2_lam=args.ewma_t2 or 1.0,
            spe_lam=args.ewma_spe or 1.0,
            robust=not args.no_robust,
            iforest=args.iforest,
        )
    except ValueError as e:
        raise CliError(str(e)) from None
    window = {
        "source": source,
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
    }
    if station:
        window["station"] = args.station
    try:
        model = fit_model(x, wanted, station_units(station, wanted), opts, window)
    except ValueError as e:  # BaselineError included: too few rows, a flat variable
        raise CliError(f"{source}: {e}") from None
    npz, meta = save_model(model, Path(args.out))
    far = model.info.get("cv_false_alarm_rate")
    print(
        f"{meta}: {model.kind} model over {len(wanted)} variables ({', '.join(wanted)}), "
        f"lags {model.lags}, {model.components} components; T2 limit {model.t2_limit:.4g}"
        + ("" if math.isnan(model.spe_limit) else f", SPE limit {model.spe_limit:.4g}")
        + ("" if far is None else f"; cross-validated false alarms {100 * far:.2f} %")
    )
    return 0
