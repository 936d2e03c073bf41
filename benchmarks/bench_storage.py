"""Storage path throughput: the line-protocol encoder, and the sink into a real InfluxDB 1.6.

Two measurements, each beside its baselines on the same data in the same run:

* **Encoder**: `server.lineprotocol.encode_frame` turns telemetry frames (formation channel
  voltages, full-precision noise, so every value needs 16-17 digits) into line protocol, in
  frames of ``--frame-rows``. Baselines, per point on the same values: influxdb-client's
  ``Point`` built and ``to_line_protocol()`` called (the usual way to write with that
  client), and a plain f-string loop with the escaped tag set precomputed per series. The
  three outputs are checked to be the same text before anything is timed.
* **Sink**: the server's writer (`server.writer.SeriesWriter` over `server.influx1`)
  takes the frames as ingest hands them over, encodes them and writes batches of
  ``--batch`` points to an influxd started here on loopback, until InfluxDB has answered for
  every point. Baseline: a bare loop POSTing the same points, pre-encoded into bodies of the
  same size, one request at a time with httpx. Each is run ``--repeat`` times alternately,
  each run into a fresh database; the best run of each counts.

``--json`` prints one JSON object on the last line with ``encode_points_per_s``,
``point_points_per_s``, ``fstring_points_per_s``, ``sink_points_per_s`` and
``bare_post_points_per_s`` (and the rest of the figures).

    taskset -c 0 .venv/bin/python benchmarks/bench_storage.py --no-sink --json  # encoder
    .venv/bin/python benchmarks/bench_storage.py --json                          # both
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.frame import Frame  # noqa: E402
from server.lineprotocol import encode_frame, escape_name  # noqa: E402

T0_NS = 1_700_000_000 * 1_000_000_000


def make_frames(points: int, frame_rows: int, series: int, seed: int) -> list[Frame]:
    """Telemetry of ``series`` formation channels: 3.7 V +- 50 mV noise, one point per ms."""
    rng = np.random.default_rng(seed)
    tagsets = tuple(
        (
            ("equipment", f"cab{s // 64:02d}-ch{s % 64:02d}"),
            ("line", "line1"),
            ("param", "cell_voltage"),
            ("quality", "good"),
            ("site", "plant1"),
            ("station", "formation"),
        )
        for s in range(series)
    )
    frames = []
    for start in range(0, points, frame_rows):
        n = min(frame_rows, points - start)
        idx = (np.arange(start, start + n) % series).astype(np.intp)
        values = rng.normal(3.7, 0.05, n)
        ts = T0_NS + np.arange(start, start + n, dtype=np.int64) * 1_000_000
        frames.append(Frame("telemetry", tagsets, idx, (("value", values),), ts))
    return frames


def rows_of(frame: Frame) -> tuple[list[dict[str, str]], list[float], list[int]]:
    tags = [dict(frame.series[i]) for i in frame.series_index.tolist()]
    return tags, frame.fields[0][1].tolist(), frame.ts_ns.tolist()


def encoder_rate(frames: list[Frame], repeat: int) -> float:
    best = 0.0
    n = sum(len(f) for f in frames)
    for _ in range(repeat):
        t = time.perf_counter()
        for f in frames:
            encode_frame(f)
        best = max(best, n / (time.perf_counter() - t))
    return best


def point_lines(frame: Frame) -> list[str]:
    from influxdb_client import Point, WritePrecision

    tags, values, ts = rows_of(frame)
    out = []
    for tg, v, t in zip(tags, values, ts, strict=True):
        p = Point("telemetry")
        for k, x in tg.items():
            p.tag(k, x)
        out.append(p.field("value", v).time(t, WritePrecision.NS).to_line_protocol())
    return out


def fstring_lines(frame: Frame) -> list[str]:
    prefix = [
        "telemetry," + ",".join(f"{escape_name(k)}={escape_name(v)}" for k, v in s)
        for s in frame.series
    ]
    out = []
    for i, v, t in zip(
        frame.series_index.tolist(), frame.fields[0][1].tolist(), frame.ts_ns.tolist(), strict=True
    ):
        text = repr(v)
        if text.endswith(".0"):
            text = text[:-2]
        out.append(f"{prefix[i]} value={text} {t}")
    return out


def per_point_rate(fn: Any, frame: Frame, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        fn(frame)
        best = max(best, len(frame) / (time.perf_counter() - t))
    return best


async def bare_post(url: str, db: str, bodies: list[bytes], points: int) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        (await c.post("/query", params={"q": f'CREATE DATABASE "{db}"'})).raise_for_status()
        t = time.perf_counter()
        for body in bodies:
            r = await c.post("/write", params={"db": db, "precision": "ns"}, content=body)
            if r.status_code != 204:
                raise RuntimeError(f"bare POST: HTTP {r.status_code}: {r.text}")
        return points / (time.perf_counter() - t)


async def sink_run(url: str, db: str, frames: list[Frame], batch: int) -> float:
    """Frames handed over as ingest does (a few batches ahead), until all are stored."""
    from models.plant import InfluxConfig
    from server.influx1 import Influx1Sink
    from server.writer import SeriesWriter

    cfg = InfluxConfig(url=url, database=db, batch_size=batch, timeout_s=60)
    n = sum(len(f) for f in frames)
    async with SeriesWriter(
        Influx1Sink(cfg), batch_size=batch, flush_interval_s=0.05, max_pending=3 * batch
    ) as w:
        done, room = asyncio.Event(), asyncio.Event()
        w.add_room_listener(room.set)
        t = time.perf_counter()
        tickets = []
        for f in frames:
            while w.full:  # three batches ahead of InfluxDB at most (ingest bounds it too)
                room.clear()
                await room.wait()
            tickets.append(w.add([f]))
            await asyncio.sleep(0)
        left = len(tickets)

        def settled() -> None:  # batches may finish out of order (two requests in flight)
            nonlocal left
            left -= 1
            if left == 0:
                done.set()

        for ticket in tickets:
            ticket.add_done_callback(settled)
        w.kick()
        await done.wait()
        rate = n / (time.perf_counter() - t)
        if w.points_written != n or w.write_errors:
            raise RuntimeError(f"sink wrote {w.points_written} of {n} ({w.write_errors} errors)")
    return rate


def count_points(url: str, db: str) -> int:
    import httpx

    r = httpx.get(
        f"{url}/query", params={"db": db, "q": "SELECT count(value) FROM telemetry"}, timeout=60
    )
    return int(r.json()["results"][0]["series"][0]["values"][0][1])


def sink_rates(frames: list[Frame], batch: int, repeat: int) -> dict[str, Any]:
    from tests.servers import influxd

    bodies: list[bytes] = []
    for f in frames:
        lines = encode_frame(f).body.split(b"\n")[:-1]
        bodies += [b"\n".join(lines[i : i + batch]) + b"\n" for i in range(0, len(lines), batch)]
    n = sum(len(f) for f in frames)
    sink, bare = [], []
    with tempfile.TemporaryDirectory() as tmp, influxd(Path(tmp)) as (url, _):
        asyncio.run(bare_post(url, "warmup", bodies[: max(1, len(bodies) // 4)], n // 4))
        for r in range(repeat):
            bare.append(asyncio.run(bare_post(url, f"bare{r}", bodies, n)))
            sink.append(asyncio.run(sink_run(url, f"sink{r}", frames, batch)))
            print(
                f"  run {r + 1}: sink {sink[-1]:,.0f} points/s, bare POST {bare[-1]:,.0f}",
                flush=True,
            )
        stored = [count_points(url, f"sink{r}") for r in range(repeat)]
        if any(s != n for s in stored):
            raise RuntimeError(f"sink databases hold {stored} points, expected {n}")
    return {"sink": max(sink), "bare": max(bare), "sink_runs": sink, "bare_runs": bare}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--points",
        type=int,
        default=2_000_000,
        help="points the encoder formats per pass (default: %(default)s)",
    )
    p.add_argument(
        "--frame-rows", type=int, default=50_000, help="rows per frame (default: %(default)s)"
    )
    p.add_argument(
        "--series", type=int, default=2560, help="distinct series (default: %(default)s)"
    )
    p.add_argument(
        "--baseline-points",
        type=int,
        default=50_000,
        help="points each per-point baseline formats (default: %(default)s)",
    )
    p.add_argument(
        "--sink-points",
        type=int,
        default=1_000_000,
        help="points written per sink run (default: %(default)s)",
    )
    p.add_argument(
        "--batch", type=int, default=10_000, help="points per write request (default: %(default)s)"
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each (default: %(default)s)")
    p.add_argument("--no-sink", action="store_true", help="only the encoder part")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = p.parse_args(argv)

    frames = make_frames(args.points, args.frame_rows, args.series, args.seed)
    sample = make_frames(args.baseline_points, args.baseline_points, args.series, args.seed)[0]
    ours = encode_frame(sample).body.decode().split("\n")[:-1]
    if ours != point_lines(sample) or ours != fstring_lines(sample):
        raise SystemExit("the encoder, Point and the f-string loop disagree on the same data")
    enc = encoder_rate(frames, args.repeat)
    point = per_point_rate(point_lines, sample, args.repeat)
    fstr = per_point_rate(fstring_lines, sample, args.repeat)
    print(f"encoder  {enc:>12,.0f} points/s  ({args.frame_rows:,} rows per frame)")
    print(f"Point    {point:>12,.0f} points/s  -> encoder is {enc / point:.1f}x")
    print(f"f-string {fstr:>12,.0f} points/s  -> encoder is {enc / fstr:.1f}x", flush=True)
    out: dict[str, Any] = {
        "encode_points_per_s": enc,
        "point_points_per_s": point,
        "fstring_points_per_s": fstr,
        "encode_vs_point": enc / point,
        "encode_vs_fstring": enc / fstr,
        "frame_rows": args.frame_rows,
        "series": args.series,
        "sink_points_per_s": None,
        "bare_post_points_per_s": None,
    }
    if not args.no_sink:
        sink_frames = make_frames(args.sink_points, args.batch, args.series, args.seed + 1)
        r = sink_rates(sink_frames, args.batch, args.repeat)
        print(
            f"sink     {r['sink']:>12,.0f} points/s into InfluxDB 1.6 "
            f"({r['sink'] / r['bare']:.1%} of the bare POST loop, {r['bare']:,.0f})"
        )
        out.update(
            {
                "sink_points_per_s": r["sink"],
                "bare_post_points_per_s": r["bare"],
                "sink_vs_bare": r["sink"] / r["bare"],
                "sink_runs": r["sink_runs"],
                "bare_runs": r["bare_runs"],
                "batch": args.batch,
                "sink_points": args.sink_points,
            }
        )
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
