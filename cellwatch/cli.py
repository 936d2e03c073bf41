"""The ``cellwatch`` command: one entry point for the demo, the simulator, the edge agent, the
server and config checks.

Every sub-command turns expected failures (a broken config file, a port that is taken, a broker
that cannot be reached) into one line on stderr and a non-zero exit code, never a traceback:
the people running it are line engineers and gateway operators, not Python developers.
Exit codes: 0 success, 1 runtime failure, 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from cellwatch.errors import CliError
from models.configfile import ConfigError, parse_plant
from models.plant import PlantConfig

__all__ = ["load_config", "main", "run_until_signal"]

#: The example plant shipped with the source tree; what the demo runs on by default.
EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "config" / "plant.example.yaml"
#: The scenario the demo's simulator plays by default.
DEMO_SCENARIO = Path(__file__).resolve().parents[1] / "config" / "scenarios" / "demo.yaml"

T = TypeVar("T")


def load_config(path: Path) -> PlantConfig:
    """Read and validate a plant file; raises `ConfigError` or `CliError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CliError(f"cannot read config {path}: {e.strerror or e}") from None
    return parse_plant(text, str(path))


async def run_until_signal(body: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``body(stop)`` and return its result; SIGINT and SIGTERM set ``stop`` so the body can
    shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await body(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _export_lp(args: argparse.Namespace) -> int:
    """Write the embedded series file as InfluxDB line protocol (for a later import)."""
    from server.embedded import export_lp, series_path_for

    if args.series:
        path = args.series
    else:
        cfg = load_config(Path(args.config))
        path = cfg.influxdb.series_path or series_path_for(cfg.server.db_path)
    if args.output == "-":
        lines = export_lp(path, sys.stdout.buffer)
    else:
        with open(args.output, "wb") as out:
            lines = export_lp(path, out)
    print(f"cellwatch export-lp: {lines} lines from {path}", file=sys.stderr)
    return 0


def _check_config(args: argparse.Namespace) -> int:
    bad = 0
    for f in args.files:
        try:
            cfg = load_config(Path(f))
        except ConfigError as e:
            bad += 1
            for p in e.problems:
                print(p, file=sys.stderr)
            continue
        n_params = sum(len(s.params) for ln in cfg.lines for s in ln.stations)
        n_sources = len(cfg.sources.opcua) + len(cfg.sources.mqtt)
        print(f"{f}: ok ({len(cfg.lines)} lines, {n_params} params, {n_sources} sources)")
    return 2 if bad else 0


def _demo(args: argparse.Namespace) -> int:
    from cellwatch.demo import DemoOptions, run_demo
    from sim.scenario import parse_scenario

    cfg = load_config(Path(args.config))
    try:
        scenario_text = Path(args.scenario).read_text(encoding="utf-8")
    except OSError as e:
        raise CliError(f"cannot read scenario {args.scenario}: {e.strerror or e}") from None
    scenario = parse_scenario(scenario_text, args.scenario)
    opts = DemoOptions(
        broker_url=args.broker,
        influxdb_url=args.influxdb,
        http_port=args.http_port,
        opcua_port=args.opcua_port,
        mqtt_port=args.mqtt_port,
        duration_s=args.duration,
        summary_path=Path(args.summary) if args.summary else None,
        seed=args.seed,
        fault_at_s=args.fault_at,
        db_path=args.db,
    )
    return asyncio.run(run_until_signal(lambda stop: run_demo(cfg, scenario, opts, stop))) or 0


def _sim(args: argparse.Namespace) -> int:
    from cellwatch.services import run_sim

    asyncio.run(run_until_signal(lambda stop: run_sim(args, stop)))
    return 0


def _edge(args: argparse.Namespace) -> int:
    from cellwatch.services import run_edge

    cfg = load_config(Path(args.config))
    asyncio.run(run_until_signal(lambda stop: run_edge(cfg, stop)))
    return 0


def _server(args: argparse.Namespace) -> int:
    from cellwatch.services import run_server

    cfg = load_config(Path(args.config))
    asyncio.run(run_until_signal(lambda stop: run_server(cfg, stop)))
    return 0


def _fit(args: argparse.Namespace) -> int:
    from cellwatch.fit import run_fit

    return run_fit(args, load_config(Path(args.config)))


def _arl(args: argparse.Namespace) -> int:
    from cellwatch.arl import run_arl

    return run_arl(args)


#: The benchmarks shipped with the source tree, by the name ``cellwatch bench NAME`` takes.
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench(args: argparse.Namespace) -> int:
    """Run ``benchmarks/bench_NAME.py`` as its own process: benchmarks start worker processes
    of their own, which must be able to import the script as ``__main__``."""
    import subprocess

    path = BENCHMARKS / f"bench_{args.name}.py"
    if not path.is_file():
        raise CliError(f"no benchmark {args.name!r}: {path} is missing (needs a source checkout)")
    return subprocess.call([sys.executable, str(path), *args.args])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cellwatch", description="Quality monitoring for lithium-ion cell production lines."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="simulator, broker, edge agent, server and dashboard at once")
    d.add_argument(
        "--config", default=str(EXAMPLE_CONFIG), help="plant file (default: %(default)s)"
    )
    d.add_argument(
        "--broker", metavar="URL", help="use this MQTT broker instead of the embedded one"
    )
    d.add_argument("--influxdb", metavar="URL", help="also write series to this InfluxDB 1.x")
    d.add_argument("--http-port", type=int, default=None, help="dashboard port (0 = any free)")
    d.add_argument("--opcua-port", type=int, default=4840, help="simulator OPC UA port (0 = any)")
    d.add_argument("--mqtt-port", type=int, default=1883, help="embedded broker port (0 = any)")
    d.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    d.add_argument("--summary", metavar="FILE", help="write a JSON summary here when stopping")
    d.add_argument(
        "--scenario",
        default=str(DEMO_SCENARIO),
        help="simulator scenario file (default: %(default)s)",
    )
    d.add_argument("--seed", type=int, help="simulator random seed (default: the scenario's)")
    d.add_argument(
        "--fault-at",
        type=float,
        metavar="S",
        help="move the scenario's faults to start S seconds after start",
    )
    d.add_argument("--db", metavar="FILE", help="alert database (default: a fresh temporary file)")
    d.set_defaults(func=_demo)

    s = sub.add_parser("sim", help="run the plant simulator alone")
    s.add_argument("--opcua-host", default="127.0.0.1")
    s.add_argument("--opcua-port", type=int, default=4840)
    s.add_argument(
        "--broker",
        metavar="URL",
        default="mqtt://127.0.0.1:1883",
        help="broker for the formation channels ('none' to skip MQTT)",
    )
    s.add_argument("--seed", type=int, help="random seed (default: the scenario's, else 1)")
    s.add_argument("--rate-hz", type=float, help="samples per second (default: scenario's, 2)")
    s.add_argument("--speed", type=float, help="run formation cycles X times faster (default: 1)")
    what = s.add_mutually_exclusive_group()
    what.add_argument("--scenario", metavar="FILE", help="scenario file with the faults to inject")
    what.add_argument(
        "--fault-at", type=float, metavar="S", help="without a scenario: lane 3 drift at S (40)"
    )
    what.add_argument("--no-fault", action="store_true", help="run without any scripted fault")
    s.add_argument("--truth", metavar="FILE", help="write the ground-truth JSONL log here")
    s.add_argument("--lanes", type=int, help="coater lanes, 1..99 (default: scenario's, 4)")
    s.add_argument("--cabinets", type=int, help="formation cabinets, 1..99 (default: 2)")
    s.add_argument("--channels", type=int, help="channels per cabinet, 1..99 (default: 4)")
    s.add_argument(
        "--formation-opcua",
        action="store_true",
        help="serve the formation channels over OPC UA too (Line1/Formation/CabNN/ChNN)",
    )
    s.add_argument(
        "--formation-opcua-arrays",
        action="store_true",
        help="serve the formation channels over OPC UA as one array per cabinet and quantity "
        "(Line1/Formation/CabNN/VoltageArray, ...); implies --formation-opcua",
    )
    s.add_argument(
        "--no-sparkplug", action="store_true", help="do not publish energy meters as Sparkplug B"
    )
    s.add_argument(
        "--single-values",
        action="store_true",
        help="publish each formation sample as its own message instead of one batch a second",
    )
    s.set_defaults(func=_sim)

    e = sub.add_parser("edge", help="run the edge agent for a plant file")
    e.add_argument("--config", required=True)
    e.set_defaults(func=_edge)

    v = sub.add_parser("server", help="run the central server for a plant file")
    v.add_argument("--config", required=True)
    v.set_defaults(func=_server)

    b = sub.add_parser("bench", help="run a benchmark from benchmarks/ (e.g. core)")
    b.add_argument(
        "name", choices=("core", "sim", "edge", "storage", "tep", "mv"), help="which benchmark"
    )
    b.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    b.set_defaults(func=_bench)

    f = sub.add_parser(
        "fit", help="fit a station's multivariate model on a baseline CSV; write its artifact"
    )
    f.add_argument("--config", required=True, help="plant file (units, station parameters)")
    f.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="FILE|influxdb",
        help="baseline CSV (a header row, one column per variable, optional time), or "
        "'influxdb' for the plant file's InfluxDB with --start/--end",
    )
    f.add_argument("--start", metavar="TIME", help="with --from influxdb: RFC 3339 start")
    f.add_argument("--end", metavar="TIME", help="with --from influxdb: RFC 3339 end (excluded)")
    f.add_argument(
        "--align-s",
        type=float,
        default=0.5,
        help="with --from influxdb: readings in one slot of this many seconds form a row",
    )
    f.add_argument("--out", required=True, metavar="PATH", help="writes PATH.npz and PATH.json")
    f.add_argument("--station", metavar="LINE/STATION", help="model this station's parameters")
    f.add_argument("--columns", metavar="LIST", help="comma-separated CSV columns to model")
    f.add_argument("--kind", choices=("pca", "hotelling"), default="pca")
    f.add_argument("--lags", type=int, default=0, help="dynamic PCA lags (default 0)")
    f.add_argument(
        "--components",
        default="0.9",
        help="cumulative variance in (0, 1), a count, or 'cv' (default 0.9)",
    )
    f.add_argument(
        "--alpha",
        type=float,
        default=0.005,
        help="false-alarm probability per statistic and sample (default 0.005)",
    )
    f.add_argument(
        "--limits",
        choices=("theory", "cv"),
        default="theory",
        help="F / Jackson-Mudholkar limits, or cross-validated quantiles",
    )
    f.add_argument("--ewma-t2", type=float, metavar="LAM", help="smooth T2 (needs --limits cv)")
    f.add_argument("--ewma-spe", type=float, metavar="LAM", help="smooth SPE (needs --limits cv)")
    f.add_argument(
        "--no-robust",
        action="store_true",
        help="Hotelling: classical mean and covariance instead of MinCovDet",
    )
    f.add_argument("--iforest", action="store_true", help="add an isolation-forest score")
    f.set_defaults(func=_fit)

    x = sub.add_parser("export-lp", help="write the embedded series file as InfluxDB line protocol")
    src = x.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="plant file naming the series file (influxdb.series_path)")
    src.add_argument("--series", metavar="FILE", help="the series file itself")
    x.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    x.set_defaults(func=_export_lp)

    c = sub.add_parser("check-config", help="validate plant files; exit 2 listing every problem")
    c.add_argument("files", nargs="+")
    c.set_defaults(func=_check_config)

    a = sub.add_parser(
        "arl", help="average run length of a chart design; solve limits for a target ARL0"
    )
    a.add_argument("--chart", required=True, choices=("shewhart", "ewma", "cusum"))
    a.add_argument("--lam", type=float, help="EWMA smoothing weight in (0, 1] (default 0.2)")
    a.add_argument("--L", type=float, help="Shewhart/EWMA limit width in sigma (default 3)")
    a.add_argument("--k", type=float, help="CUSUM reference value in sigma (default 0.5)")
    a.add_argument("--h", type=float, help="CUSUM decision interval in sigma (default 5)")
    a.add_argument(
        "--rules", metavar="LIST", help="Shewhart rules, e.g. we1,we2,we3,we4 (default we1)"
    )
    a.add_argument("--shift", type=float, default=0.0, help="mean shift in sigma (default 0)")
    a.add_argument(
        "--limits",
        choices=("asymptotic", "exact"),
        help="EWMA limits: fixed asymptotic (default, exact Markov chain) or time-varying",
    )
    a.add_argument(
        "--method",
        choices=("auto", "markov", "simulation"),
        default="auto",
        help="auto: the Markov chain where one exists, else simulation",
    )
    a.add_argument("--runs", type=int, help="simulated runs (default 10000)")
    a.add_argument("--seed", type=int, help="simulation seed (default 0)")
    a.add_argument("--max-steps", type=int, help="simulation step budget (default 100000)")
    a.add_argument(
        "--target-arl0",
        type=float,
        metavar="A",
        help="first solve L (Shewhart, EWMA) or h (CUSUM) for this in-control ARL",
    )
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=_arl)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("asyncua", "amqtt", "transitions", "httpx", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not args.verbose else logging.INFO)
    try:
        return int(args.func(args))
    except ConfigError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        return 2
    except (CliError, OSError) as e:
        print(f"cellwatch: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:
        print(
            f"cellwatch {args.command}: needs {e.name}, which this install lacks; "
            "install the server extra: pip install 'cellwatch[server]'",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
