"""``cellwatch fit``: fit a station's multivariate model on a baseline file and write its artifact.

Process engineers pick an in-control period, export it (one column per variable, optionally a
time column), and run this command; the artifact it writes (``OUT.npz`` + ``OUT.json``) is what
gateways load. Variables are the CSV columns given with ``--columns``, else the columns that
name a parameter of ``--station`` (``param`` or ``equipment/param``, ``equipment.param``), else
every numeric column. Units come from the plant file's parameters. The fitting itself is
`server.mvfit.fit_model`; this module reads the file, chooses the columns and reports.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from cellwatch.errors import CliError
from models.plant import PlantConfig, StationConfig

__all__ = ["read_baseline", "run_fit", "station_units"]

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
    if "://" in source:
        raise CliError(f"{source}: only CSV files are read here; export the baseline period to CSV")
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
