"""Electricity meters of the line: one per dryer zone and one per formation cabinet.

Energy per good cell is a reporting figure, and the plant's meters are where it comes from. A
meter does two things that behave differently and are modelled apart: it shows the present
power, which is a noisy instantaneous reading, and it counts energy in a register inside the
device. The register integrates the true power (trapezoid rule over the injected sample
times), not the noisy readings, so it is exact up to the discretisation and reading noise never
accumulates in it, as with a real meter whose register counts every cycle of the mains.
Power is signed: a regenerative formation cabinet that discharges its cells into the plant
network exports energy. Like a four-quadrant meter, each meter keeps an import register
(``energy_kwh``) and an export register (``export_kwh``), and an interval whose power changes
sign is split at the zero crossing of the linear interpolation, so both stay exact. Registers
only ever rise.

The caller supplies the true power of every meter at each time; this module adds the reading
noise (Gaussian, ``noise_pct`` percent of the true power) from its own seeded stream, so it is a
pure function of the injected times, powers and seed and leaves the coating and formation
models' draws untouched. A NaN true power means the meter is not measuring (switched off or
its input lost): its reading is NaN and its register holds over every interval with a NaN at
either end, since an unknown power cannot be integrated. Such intervals are counted in
``held``. Infinite power and times that do not increase are caller errors: they raise
``ValueError``, are counted in ``rejected`` and leave the meters unchanged.

>>> meters = EnergyMeters(dryer_meter_names(2), seed=1, noise_pct=0.0)
>>> meters.update(0.0, [30.0, 60.0]).energy_kwh.tolist()
[0.0, 0.0]
>>> reading = meters.update(3600.0, [30.0, 60.0])
>>> reading.energy_kwh.tolist(), reading.total_kwh
([30.0, 60.0], 90.0)
>>> meters.update(7200.0, [-30.0, 60.0]).export_kwh.tolist()  # 30 -> -30 kW: half each way
[7.5, 0.0]
>>> cabinet_meter_names(2)
('cab01', 'cab02')
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_NOISE_PCT",
    "SPAWN_KEY",
    "EnergyMeters",
    "MeterReading",
    "cabinet_meter_names",
    "dryer_meter_names",
]

#: First element of the noise stream's spawn key ("en" in ASCII). The simulator's model
#: streams are the seed's children 0 and 1; this key is far from any child index, and the
#: meter names are hashed into the key after it, so the dryer and cabinet meters made from one
#: seed do not share noise.
SPAWN_KEY = 0x656E
#: Largest accepted reading noise, in percent of the true power: class 0.5 to 2 meters are
#: far inside it, and it keeps a negative reading of a positive power out of reach.
MAX_NOISE_PCT = 10.0


def dryer_meter_names(zones: int) -> tuple[str, ...]:
    """Names of the dryer meters, one per zone: ``dryer_zone1`` ... ``dryer_zoneN``."""
    if not 1 <= zones <= 99:
        raise ValueError(f"zones must be in 1..99, got {zones}")
    return tuple(f"dryer_zone{z}" for z in range(1, zones + 1))


def cabinet_meter_names(cabinets: int) -> tuple[str, ...]:
    """Names of the formation cabinet meters: ``cab01`` ... ``cabNN``."""
    if not 1 <= cabinets <= 99:
        raise ValueError(f"cabinets must be in 1..99, got {cabinets}")
    return tuple(f"cab{c:02d}" for c in range(1, cabinets + 1))


@dataclass(frozen=True, slots=True)
class MeterReading:
    """What every meter shows at epoch time ``ts``, in the order of ``names``.

    ``power_kw`` is the noisy instantaneous reading (NaN for a meter not measuring, negative
    while exporting); ``energy_kwh`` the import registers and ``export_kwh`` the export
    registers. All arrays are read-only copies.
    """

    ts: float
    names: tuple[str, ...]
    power_kw: npt.NDArray[np.float64]
    energy_kwh: npt.NDArray[np.float64]
    export_kwh: npt.NDArray[np.float64]

    @property
    def total_kwh(self) -> float:
        """Sum of the import registers."""
        return float(self.energy_kwh.sum())


class EnergyMeters:
    """A set of meters read together; ``update`` advances them to a later time.

    ``noise_pct`` is the reading noise sigma in percent of the true power (0..10);
    ``start_kwh`` the registers' values before the first update (zeros if None).
    """

    def __init__(
        self,
        names: Sequence[str],
        seed: int | np.random.SeedSequence = 1,
        noise_pct: float = 0.5,
        start_kwh: Sequence[float] | None = None,
    ) -> None:
        names = tuple(names)
        if not names:
            raise ValueError("names must hold at least one meter name, got none")
        if any(not isinstance(n, str) or not n for n in names):
            raise ValueError(f"names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"names must be unique, got {dup} more than once")
        if not (math.isfinite(noise_pct) and 0.0 <= noise_pct <= MAX_NOISE_PCT):
            raise ValueError(f"noise_pct must be in 0..{MAX_NOISE_PCT:g}, got {noise_pct}")
        if start_kwh is None:
            registers = np.zeros(len(names))
        else:
            registers = np.array(start_kwh, dtype=np.float64)
            if registers.shape != (len(names),):
                raise ValueError(
                    f"start_kwh must hold one value per meter ({len(names)}), "
                    f"got shape {registers.shape}"
                )
            if not (np.isfinite(registers).all() and (registers >= 0.0).all()):
                raise ValueError(f"start_kwh must be finite and >= 0, got {registers.tolist()}")
        self.names = names
        self.noise_pct = noise_pct
        base = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        names_key = zlib.crc32("\n".join(names).encode())
        stream = np.random.SeedSequence(
            entropy=base.entropy, spawn_key=(*base.spawn_key, SPAWN_KEY, names_key)
        )
        self._rng = np.random.default_rng(stream)
        self._energy = registers
        self._export = np.zeros(len(names))
        self._last_ts: float | None = None
        self._last_power: npt.NDArray[np.float64] | None = None
        self.rejected = 0
        self.held = np.zeros(len(names), dtype=np.int64)

    def update(self, ts: float, true_power_kw: npt.ArrayLike) -> MeterReading:
        """Advance every meter to epoch ``ts`` at the given true powers (kW, one per meter)."""
        power = np.asarray(true_power_kw, dtype=np.float64)
        try:
            self._check(ts, power)
        except ValueError:
            self.rejected += 1
            raise
        # One draw per meter on every update, measuring or not, so that a dropout does not
        # shift the noise of later readings.
        noise = self._rng.standard_normal(len(self.names))
        measured = power * (1.0 + noise * (self.noise_pct / 100.0))
        if self._last_ts is not None and self._last_power is not None:
            dt_h = (ts - self._last_ts) / 3600.0
            imported = _positive_area(self._last_power, power) * dt_h
            exported = _positive_area(-self._last_power, -power) * dt_h
            unknown = np.isnan(imported)
            self.held += unknown
            self._energy = self._energy + np.where(unknown, 0.0, imported)
            self._export = self._export + np.where(unknown, 0.0, exported)
        self._last_ts = ts
        self._last_power = power.copy()
        return MeterReading(
            ts, self.names, _frozen(measured), _frozen(self._energy), _frozen(self._export)
        )

    def _check(self, ts: float, power: npt.NDArray[np.float64]) -> None:
        if not math.isfinite(ts):
            raise ValueError(f"ts must be a finite epoch time, got {ts}")
        if self._last_ts is not None and ts <= self._last_ts:
            raise ValueError(
                f"ts must increase from one update to the next: got {ts} after {self._last_ts}"
            )
        if power.shape != (len(self.names),):
            raise ValueError(
                f"true_power_kw must hold one value per meter ({len(self.names)}), "
                f"got shape {power.shape}"
            )
        bad = [
            f"{name}={p}"
            for name, p in zip(self.names, power.tolist(), strict=True)
            if not math.isnan(p) and not math.isfinite(p)
        ]
        if bad:
            raise ValueError(
                "true_power_kw must be finite (NaN for not measuring), got " + ", ".join(bad)
            )


def _positive_area(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Integral over a unit interval of max(p, 0) for p linear from ``a`` to ``b``.

    With a sign change the positive part is the triangle up to the zero crossing,
    max(a, 0)^2 + max(b, 0)^2 over 2|a - b|; NaN stays NaN.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        mixed = (np.maximum(a, 0.0) ** 2 + np.maximum(b, 0.0) ** 2) / (2.0 * np.abs(a - b))
    both_up = (a >= 0.0) & (b >= 0.0)
    both_down = (a <= 0.0) & (b <= 0.0)
    out = np.where(both_up, 0.5 * (a + b), np.where(both_down, 0.0, mixed))
    return np.where(np.isnan(a) | np.isnan(b), np.nan, out)


def _frozen(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out = np.array(values, dtype=np.float64)
    out.setflags(write=False)
    return out
