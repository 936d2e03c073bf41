"""The numeric model of the formation cabinets: the per-cell protocol, its signals and results.

Every channel forms one cell after another with the first-cycle protocol of DOMAIN.md 2 (the
example NMC/graphite recipe): a constant-current (CC) charge at 0.2C until the voltage reaches
4.2 V, a constant-voltage (CV) hold at 4.2 V while the current decays to the 0.05C cut-off, a
rest, a CC discharge at 0.2C to the 2.8 V lower cut-off, then the cell is unloaded and the next
one loaded (idle). A demo needs whole cycles within minutes, so each cell gets a slot of
``SLOT_H`` hours of process time that the model compresses into ``CYCLE_S`` seconds of wall
time; ``speed`` compresses further (a slot takes ``CYCLE_S / speed`` seconds). Channels are
offset in phase so that they do not all switch at once; a channel's idle is what is left of
its slot after the protocol, which varies from cell to cell.

Cells are numbered ``n = 0, 1, 2, ...`` in the order they start, across channels; cells 0 to
``cabinets * channels - 2`` are already on their channels when the model starts at
``start_ts``. Each cell has its own true capacity, first coulombic efficiency (FCE) and DC
resistance, drawn from a stream keyed by (seed, n), so a cell is the same cell whatever the
speed, the sample rate or the order of queries. ``result(n)`` and ``completed(ts)`` give the
cycler's per-cell results (Ah, Wh, FCE, energy recovered), integrated in closed form over the
uncompressed protocol, so their statistics do not depend on ``speed`` or on sampling.

``ideal(ts)`` gives the noise-free voltage, current (negative while discharging) and capacity
of every channel; capacity is the charge moved in the current step (the cycler's step Ah,
counted positive in both directions; the CC and CV parts form one CCCV step, and rest and idle
read 0). ``sample(ts)`` adds seeded Gaussian noise; the cell temperature is stationary noise
around its nominal (the monitored, detector-driven parameter, so ohmic heating is left out).
Scripted formation faults (``sim.fault``) are applied to the samples by ``sim.injector`` after
the noise; a clock skew leaves the values alone and shifts the channel's timestamps
(``FormationSample.skew``). Two faults also change the results: a ``lot_effect`` scales the
capacity of every cell whose formation overlaps its window (charge and discharge alike, so the
FCE stays; energies follow the charge; the step timing stays the nominal cell's), and a
``calibration_offset`` is a reading error of the target channel that the cycler integrates over
the part of each step inside the window: a current offset adds offset x hours to the charge Ah
(and offset x the integral of V dt to its Wh) and takes the same off the discharge, whose
current is negative; a voltage offset adds offset x Ah to the Wh of both directions; a capacity
offset moves each step's Ah reading by the offset when the step ends inside the window; a
temperature offset changes no Ah or Wh. The other fault kinds change the published samples
only, not the cycler's own bookkeeping. The model itself is a pure function of injected times
and the seed, with no clock and no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from sim.fault import Fault, FormationTarget
from sim.genealogy import CellRecord, cell_id
from sim.injector import Injector
from sim.nominal import Nominal

__all__ = [
    "AUX_KW",
    "CAPACITY",
    "CC_AMPS",
    "CELL_AH",
    "CELL_TEMPERATURE",
    "CURRENT",
    "CV_CUTOFF_AMPS",
    "CYCLE_S",
    "DISCHARGE_AMPS",
    "ETA_CONV",
    "ETA_REC",
    "REST_H",
    "SLOT_H",
    "V_CUTOFF",
    "V_END",
    "V_START",
    "VOLTAGE",
    "CellParams",
    "CellResult",
    "CellSlot",
    "FormationModel",
    "FormationSample",
    "result_payload",
]

#: Nominal (rated) capacity of the simulated cell in Ah.
CELL_AH = 10.0
#: CC charge and CC discharge at 0.2C, charge to 4.2 V and discharge to 2.8 V (DOMAIN.md 2,
#: "Example NMC/graphite industrial-style recipe"); CV hold until the current falls to 0.05C
#: (the recipe names the CV hold without its end; C/20 is the usual choice).
CC_AMPS = 0.2 * CELL_AH
DISCHARGE_AMPS = 0.2 * CELL_AH
CV_CUTOFF_AMPS = 0.05 * CELL_AH
V_START = 3.0
V_END = 4.2
V_CUTOFF = 2.8
#: Wall-time length of one compressed cell slot at speed 1, in seconds.
CYCLE_S = 120.0
#: Process hours one slot stands for: the protocol (about 11.7 h for a nominal cell, 12.7 h
#: at most) plus unloading and loading. DOMAIN.md 2 quotes 12-36 h of formation for NMC.
SLOT_H = 13.0
#: Rest between charge and discharge, in hours.
REST_H = 0.5
#: Relaxation of the open-circuit voltage after the current stops: the drop after the charge,
#: the rebound after the discharge, and their time constant in hours.
RELAX_V, REBOUND_V, RELAX_H = 0.03, 0.35, 0.1

#: The cell population (no source gives a batch spread, DOMAIN.md 3: recipe assumptions).
#: Discharge capacity at 0.2C to 2.8 V: designed with margin over the rating.
CAPACITY_MEAN_AH, CAPACITY_SIGMA_AH = 10.15, 0.06
#: First coulombic efficiency: DOMAIN.md 2 puts graphite full cells at 85-92 %.
FCE_MEAN, FCE_SIGMA = 0.89, 0.01
#: DC resistance, lognormal around its median.
DCIR_MEDIAN_MOHM, DCIR_SIGMA_LOG = 4.0, 0.06
#: Share of the charge put in during the CV hold by a cell of median resistance; a cell with a
#: higher resistance reaches 4.2 V earlier and takes a larger share at constant voltage.
CV_SHARE = 0.08
#: Per-cell draws are clipped at this many sigma, which keeps every protocol inside its slot.
Z_CLIP = 6.0

#: Cabinet efficiencies for the grid power, E_grid = E_chg / eta_conv - eta_rec * E_dis + E_aux
#: (DOMAIN.md 2.2): eta_rec from "regenerative systems recover 40-60 % of discharge energy"
#: (DOMAIN.md 2.1), eta_conv an assumed AC-to-cell efficiency (DOMAIN.md gives none; take it
#: from the cabinet datasheet), and the auxiliary load of one cabinet (controller, fans).
ETA_CONV = 0.90
ETA_REC = 0.50
AUX_KW = 0.05

#: Spawn-key tag of the per-cell streams (distinct from the injector's child 0).
CELL_STREAM = 0xCE11

VOLTAGE = Nominal(mean=3.7, sigma=0.002, unit="V", low=0.0, high=5.0)
CURRENT = Nominal(mean=CC_AMPS, sigma=0.005, unit="A", low=-20.0, high=20.0)
CAPACITY = Nominal(mean=CELL_AH / 2, sigma=0.0005, unit="Ah", low=0.0, high=2 * CELL_AH)
CELL_TEMPERATURE = Nominal(mean=25.0, sigma=0.3, unit="degC", low=-20.0, high=80.0)

_CC_K = 0.05  # time scale of the initial rise of the CC charge curve, in units of the CC time
_DIS_K = 0.03  # time scale of the initial drop of the discharge curve
_CC_NORM = 0.45 / (1.0 - math.exp(-1.0 / _CC_K))
_DIS_NORM = 0.15 / (1.0 - math.exp(-1.0 / _DIS_K))


@dataclass(frozen=True, slots=True)
class FormationSample:
    """One sample of every formation channel at epoch ``ts``; arrays are (cabinets, channels).

    NaN marks a channel that published nothing at this time (a dropout). ``skew`` (same shape,
    or None for none) holds the seconds each channel's clock runs ahead of ``ts``."""

    ts: float
    voltage: npt.NDArray[np.float64]
    current: npt.NDArray[np.float64]
    capacity: npt.NDArray[np.float64]
    temperature: npt.NDArray[np.float64]
    skew: npt.NDArray[np.float64] | None = None


@dataclass(frozen=True, slots=True)
class CellParams:
    """A cell as drawn: ground truth, not a measurement (payloads leave it out).

    ``capacity_ah`` is the discharge capacity at 0.2C to 2.8 V before any lot effect, ``fce``
    the first coulombic efficiency, ``dcir_mohm`` the DC resistance."""

    capacity_ah: float
    fce: float
    dcir_mohm: float


@dataclass(frozen=True, slots=True)
class CellSlot:
    """Where and when cell ``n`` is formed: ``start_ts`` is the start of its charge,
    ``end_ts`` its discharge cut-off, ``next_ts`` the start of the next cell on the channel
    (epoch seconds, compressed)."""

    n: int
    cell_id: str
    cabinet: int
    channel: int
    start_ts: float
    end_ts: float
    next_ts: float

    @property
    def equipment(self) -> str:
        """Channel as the plant config names it (``cab01-ch02``)."""
        return f"cab{self.cabinet:02d}-ch{self.channel:02d}"


@dataclass(frozen=True, slots=True)
class CellResult:
    """The cycler's results for cell ``n``, as reported (faults included).

    Ah and Wh are cell-side figures over the uncompressed protocol: ``charge_ah`` and
    ``energy_charged_wh`` of the CCCV charge, ``discharge_ah`` and ``energy_discharged_wh``
    of the discharge, ``fce = discharge_ah / charge_ah``, ``energy_recovered_wh`` the
    discharge energy fed back by the regenerative cabinet (``ETA_REC`` of it). ``dcir_mohm``
    is the resistance from the voltage step when the charge current stops, ``formation_h``
    the protocol's length in process hours. ``params``, ``lot_scale`` (the capacity factor
    of a lot effect, 1.0 without one) and ``loading_scale`` (the capacity factor of the
    electrode's coat weight, ``sim.loading``) are ground truth for grading and evaluation."""

    n: int
    cell_id: str
    cabinet: int
    channel: int
    start_ts: float
    end_ts: float
    charge_ah: float
    discharge_ah: float
    fce: float
    energy_charged_wh: float
    energy_discharged_wh: float
    energy_recovered_wh: float
    dcir_mohm: float
    formation_h: float
    params: CellParams
    lot_scale: float = 1.0
    loading_scale: float = 1.0


def _cc_shape(u: Any) -> Any:
    """Charge curve over the CC part, u in [0, 1]: a quick rise, a sloped plateau and a knee,
    from 0 to exactly 1."""
    return _CC_NORM * (1.0 - np.exp(-u / _CC_K)) + 0.35 * u + 0.20 * u**8


def _cc_shape_integral(u: Any) -> Any:
    """Integral of ``_cc_shape`` from 0 to u."""
    return _CC_NORM * (u - _CC_K * (1.0 - np.exp(-u / _CC_K))) + 0.175 * u**2 + 0.20 * u**9 / 9


def _dis_shape(u: Any) -> Any:
    """Fall of the discharge curve, u in [0, 1]: a quick drop, a sloped plateau and a steep
    knee into the cut-off, from 0 to exactly 1."""
    return _DIS_NORM * (1.0 - np.exp(-u / _DIS_K)) + 0.45 * u + 0.40 * u**10


def _dis_shape_integral(u: Any) -> Any:
    """Integral of ``_dis_shape`` from 0 to u."""
    return _DIS_NORM * (u - _DIS_K * (1.0 - np.exp(-u / _DIS_K))) + 0.225 * u**2 + 0.40 * u**11 / 11


@dataclass(frozen=True, slots=True)
class _Protocol:
    """One cell's protocol in process hours from its slot start, with closed-form integrals."""

    t_cc: float  # end of the CC charge
    tau: float  # time constant of the CV current decay
    t_chg: float  # end of the CV hold (cut-off current reached)
    t_dis0: float  # start of the discharge (end of the rest)
    t_dis: float  # length of the discharge
    t_end: float  # discharge cut-off
    q_cc: float  # Ah of the CC part
    r_ohm: float  # DC resistance
    v_d0: float  # terminal voltage at the start of the discharge

    @classmethod
    def of(cls, p: CellParams) -> _Protocol:
        r = p.dcir_mohm / 1000.0
        q_chg = p.capacity_ah / p.fce
        q_cv = CV_SHARE * p.dcir_mohm / DCIR_MEDIAN_MOHM * q_chg
        tau = q_cv / (CC_AMPS - CV_CUTOFF_AMPS)
        t_cc = (q_chg - q_cv) / CC_AMPS
        t_chg = t_cc + tau * math.log(CC_AMPS / CV_CUTOFF_AMPS)
        v_rest = V_END - CV_CUTOFF_AMPS * r - RELAX_V * -math.expm1(-REST_H / RELAX_H)
        t_dis = p.capacity_ah / DISCHARGE_AMPS
        return cls(
            t_cc=t_cc,
            tau=tau,
            t_chg=t_chg,
            t_dis0=t_chg + REST_H,
            t_dis=t_dis,
            t_end=t_chg + REST_H + t_dis,
            q_cc=q_chg - q_cv,
            r_ohm=r,
            v_d0=v_rest - DISCHARGE_AMPS * r,
        )

    def row(self) -> tuple[float, ...]:
        return (
            self.t_cc,
            self.tau,
            self.t_chg,
            self.t_dis0,
            self.t_dis,
            self.t_end,
            self.q_cc,
            self.r_ohm,
            self.v_d0,
        )

    def charge(self, a: float, b: float) -> tuple[float, float, float]:
        """Ah, integral of V dt (V h) and Wh of the charge between process hours a and b."""
        ah = vh = wh = 0.0
        lo, hi = max(a, 0.0), min(b, self.t_cc)
        if hi > lo:  # CC part
            span = hi - lo
            du = _cc_shape_integral(hi / self.t_cc) - _cc_shape_integral(lo / self.t_cc)
            v = V_START * span + (V_END - V_START) * self.t_cc * float(du)
            ah, vh, wh = CC_AMPS * span, v, CC_AMPS * v
        lo, hi = max(a, self.t_cc) - self.t_cc, min(b, self.t_chg) - self.t_cc
        if hi > lo:  # CV part: I = CC_AMPS * exp(-t / tau)
            q = CC_AMPS * self.tau * (math.exp(-lo / self.tau) - math.exp(-hi / self.tau))
            ah, vh, wh = ah + q, vh + V_END * (hi - lo), wh + V_END * q
        return ah, vh, wh

    def discharge(self, a: float, b: float) -> tuple[float, float, float]:
        """Ah (positive), integral of V dt (V h) and Wh of the discharge between hours a and b."""
        lo, hi = max(a, self.t_dis0) - self.t_dis0, min(b, self.t_end) - self.t_dis0
        if not hi > lo:
            return 0.0, 0.0, 0.0
        du = _dis_shape_integral(hi / self.t_dis) - _dis_shape_integral(lo / self.t_dis)
        v = self.v_d0 * (hi - lo) - (self.v_d0 - V_CUTOFF) * self.t_dis * float(du)
        return DISCHARGE_AMPS * (hi - lo), v, DISCHARGE_AMPS * v


class FormationModel:
    """Seeded generator of ``FormationSample`` values and per-cell results for ``cabinets`` x
    ``channels`` channels.

    ``start_ts`` is the epoch time at which channel (1, 1) starts a cell; ``speed`` runs the
    slots that many times faster; the formation ones of ``faults`` are injected.
    ``capacity_scale`` (cell index -> factor) scales each cell's capacity and energies for
    what happened upstream, the coat weight of its electrode (``sim.loading``).
    """

    def __init__(
        self,
        seed: int | np.random.SeedSequence = 1,
        cabinets: int = 2,
        channels: int = 4,
        start_ts: float = 0.0,
        faults: Sequence[Fault] = (),
        speed: float = 1.0,
        capacity_scale: Callable[[int], float] | None = None,
    ) -> None:
        if not 1 <= cabinets <= 99:
            raise ValueError(f"cabinets must be in 1..99, got {cabinets}")
        if not 1 <= channels <= 99:
            raise ValueError(f"channels must be in 1..99, got {channels}")
        if not (math.isfinite(speed) and speed > 0.0):
            raise ValueError(f"speed must be > 0, got {speed}")
        for f in faults:
            t = f.target
            if isinstance(t, FormationTarget) and (t.cabinet > cabinets or t.channel > channels):
                raise ValueError(
                    f"fault channel cab{t.cabinet:02d}/ch{t.channel:02d} does not exist with "
                    f"{cabinets} cabinets of {channels} channels"
                )
        self.cabinets = cabinets
        self.channels = channels
        self.start_ts = start_ts
        self.speed = speed
        self._capacity_scale = capacity_scale
        self._rng = np.random.default_rng(seed)
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._entropy = ss.entropy
        self._spawn_key = tuple(ss.spawn_key)
        sigmas = {
            "voltage": VOLTAGE.sigma,
            "current": CURRENT.sigma,
            "capacity": CAPACITY.sigma,
            "cell_temperature": CELL_TEMPERATURE.sigma,
        }
        self._injector = Injector(
            faults, "formation", sigmas, (cabinets, channels), ss.spawn(1)[0], start_ts
        )
        n = cabinets * channels
        self._n_channels = n
        self._phase = (np.arange(n) * (CYCLE_S / n)).reshape(cabinets, channels)
        self._flat = np.arange(n).reshape(cabinets, channels)
        self._lots = [
            (self._window(f), 1.0 + f.magnitude / 100.0)
            for f in self._injector.faults
            if f.kind == "lot_effect"
        ]
        self._offsets: dict[tuple[int, int], list[tuple[tuple[float, float], str, float]]] = {}
        for f in self._injector.faults:
            if f.kind == "calibration_offset" and isinstance(f.target, FormationTarget):
                key = (f.target.cabinet, f.target.channel)
                self._offsets.setdefault(key, []).append(
                    (self._window(f), f.target.param, f.magnitude)
                )
        self._cells: dict[int, tuple[CellParams, _Protocol]] = {}
        self._channel_n = np.full(n, -1, dtype=np.int64)
        self._table = np.zeros((len(fields(_Protocol)), n))
        self._reported: set[int] = set()
        self._low = 0
        self._last_ts = -math.inf

    @property
    def time_factor(self) -> float:
        """Process seconds one wall-time second stands for (``SLOT_H`` h per slot)."""
        return SLOT_H * 3600.0 / CYCLE_S * self.speed

    def _window(self, fault: Fault) -> tuple[float, float]:
        end = math.inf if fault.end_s is None else self.start_ts + fault.end_s
        return self.start_ts + fault.start_s, end

    # -- cells -------------------------------------------------------------------------------

    def _cell(self, n: int) -> tuple[CellParams, _Protocol]:
        """Parameters and protocol of cell ``n`` from its own stream keyed by (seed, n)."""
        cached = self._cells.get(n)
        if cached is not None:
            return cached
        ss = np.random.SeedSequence(self._entropy, spawn_key=(*self._spawn_key, CELL_STREAM, n))
        z = np.clip(np.random.default_rng(ss).standard_normal(3), -Z_CLIP, Z_CLIP)
        params = CellParams(
            capacity_ah=CAPACITY_MEAN_AH + CAPACITY_SIGMA_AH * float(z[0]),
            fce=FCE_MEAN + FCE_SIGMA * float(z[1]),
            dcir_mohm=DCIR_MEDIAN_MOHM * math.exp(DCIR_SIGMA_LOG * float(z[2])),
        )
        cell = (params, _Protocol.of(params))
        if len(self._cells) >= 8 * self._n_channels + 4096:
            del self._cells[next(iter(self._cells))]  # the oldest entry
        self._cells[n] = cell
        return cell

    def params(self, n: int) -> CellParams:
        """The drawn parameters of cell ``n`` (ground truth)."""
        self._check_n(n)
        return self._cell(n)[0]

    def _check_n(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"cell index n must be >= 0, got {n}")

    def _start(self, n: int) -> float:
        """Epoch second at which cell ``n`` starts: one start every ``CYCLE_S / N`` seconds."""
        lag = (n - (self._n_channels - 1)) * CYCLE_S / self._n_channels
        return self.start_ts + lag / self.speed

    def _end(self, n: int) -> float:
        """Epoch second of cell ``n``'s discharge cut-off."""
        return self._start(n) + self._cell(n)[1].t_end * CYCLE_S / SLOT_H / self.speed

    def _channel_of(self, n: int) -> tuple[int, int]:
        """Flat channel index of cell ``n`` and its slot number on that channel."""
        size = self._n_channels
        j = (size - 1 - n) % size
        return j, (n + j - (size - 1)) // size

    def slot(self, n: int) -> CellSlot:
        """Channel and times of cell ``n``."""
        self._check_n(n)
        j, _ = self._channel_of(n)
        start = self._start(n)
        cab, ch = divmod(j, self.channels)
        return CellSlot(
            n=n,
            cell_id=cell_id(n),
            cabinet=cab + 1,
            channel=ch + 1,
            start_ts=start,
            end_ts=self._end(n),
            next_ts=start + CYCLE_S / self.speed,
        )

    def result(self, n: int) -> CellResult:
        """The cycler's results for cell ``n`` (faults included, see the module docstring)."""
        slot = self.slot(n)
        params, proto = self._cell(n)
        q_c, _, e_c = proto.charge(0.0, math.inf)
        q_d, _, e_d = proto.discharge(0.0, math.inf)
        lot = 1.0
        for (w0, w1), factor in self._lots:
            if slot.start_ts < w1 and slot.end_ts > w0:
                lot *= factor
        loading = 1.0 if self._capacity_scale is None else self._capacity_scale(n)
        scale = lot * loading
        q_c, e_c, q_d, e_d = q_c * scale, e_c * scale, q_d * scale, e_d * scale
        hours_per_wall = SLOT_H / CYCLE_S * self.speed
        for (w0, w1), param, m in self._offsets.get((slot.cabinet, slot.channel), ()):
            a, b = (w0 - slot.start_ts) * hours_per_wall, (w1 - slot.start_ts) * hours_per_wall
            c_ah, c_vh, _ = proto.charge(a, b)
            d_ah, d_vh, _ = proto.discharge(a, b)
            c_h = max(min(b, proto.t_chg) - max(a, 0.0), 0.0)
            d_h = max(min(b, proto.t_end) - max(a, proto.t_dis0), 0.0)
            if param == "current":
                q_c, e_c = q_c + m * c_h, e_c + m * c_vh
                q_d, e_d = q_d - m * d_h, e_d - m * d_vh
            elif param == "voltage":
                e_c, e_d = e_c + m * c_ah, e_d + m * d_ah
            elif param == "capacity":
                q_c += m if a <= proto.t_chg < b else 0.0
                q_d += m if a <= proto.t_end < b else 0.0
        return CellResult(
            n=n,
            cell_id=slot.cell_id,
            cabinet=slot.cabinet,
            channel=slot.channel,
            start_ts=slot.start_ts,
            end_ts=slot.end_ts,
            charge_ah=q_c,
            discharge_ah=q_d,
            fce=q_d / q_c,
            energy_charged_wh=e_c,
            energy_discharged_wh=e_d,
            energy_recovered_wh=ETA_REC * e_d,
            dcir_mohm=params.dcir_mohm,
            formation_h=proto.t_end,
            params=params,
            lot_scale=lot,
            loading_scale=loading,
        )

    def completed(self, ts: float) -> list[CellResult]:
        """Results of the cells whose discharge ended in (previous call's ts, ts], in end-time
        order (ties by n); the first call returns every cell that ended by ``ts``."""
        if not ts >= self._last_ts:
            raise ValueError(f"ts must not go back: got {ts} after {self._last_ts}")
        self._last_ts = ts
        size = self._n_channels
        last_started = math.floor((ts - self.start_ts) * self.speed * size / CYCLE_S) + size - 1
        done = [
            (end, n)
            for n in range(self._low, last_started + 1)
            if n not in self._reported and (end := self._end(n)) <= ts
        ]
        done.sort()
        self._reported.update(n for _, n in done)
        while self._low in self._reported:
            self._reported.discard(self._low)
            self._low += 1
        return [self.result(n) for _, n in done]

    def _window_check(self, ts_from: float, ts_to: float) -> None:
        if not (math.isfinite(ts_from) and math.isfinite(ts_to)):
            raise ValueError(f"window must be finite epoch seconds, got {ts_from}..{ts_to}")
        if not ts_to >= ts_from:
            raise ValueError(f"ts_to must be >= ts_from ({ts_from}), got {ts_to}")

    def _overlapping(self, candidates: range, ts_from: float, ts_to: float) -> list[int]:
        out = []
        for n in candidates:
            if n >= 0 and self._start(n) < ts_to and self._end(n) > ts_from:
                out.append(n)
        return out

    def cells_formed(self, ts_from: float, ts_to: float) -> list[int]:
        """Cells (ascending n) whose formation, first charge to discharge cut-off, overlaps
        [ts_from, ts_to) on any channel (a lot effect's reach)."""
        self._window_check(ts_from, ts_to)
        size = self._n_channels
        per_cell = CYCLE_S / size / self.speed
        lo = math.floor((ts_from - self.start_ts) / per_cell) - 1  # a slot back
        hi = math.ceil((ts_to - self.start_ts) / per_cell) + size
        return self._overlapping(range(max(lo, 0), hi + 1), ts_from, ts_to)

    def cells_on_channel(
        self, cabinet: int, channel: int, ts_from: float, ts_to: float
    ) -> list[int]:
        """Cells (ascending n) formed on one channel (1-based) whose formation overlaps
        [ts_from, ts_to) (a channel fault's reach)."""
        if not 1 <= cabinet <= self.cabinets:
            raise ValueError(f"cabinet must be in 1..{self.cabinets}, got {cabinet}")
        if not 1 <= channel <= self.channels:
            raise ValueError(f"channel must be in 1..{self.channels}, got {channel}")
        self._window_check(ts_from, ts_to)
        size = self._n_channels
        j = (cabinet - 1) * self.channels + channel - 1
        phase = j * CYCLE_S / size
        k_lo = math.floor(((ts_from - self.start_ts) * self.speed + phase) / CYCLE_S) - 1
        k_hi = math.floor(((ts_to - self.start_ts) * self.speed + phase) / CYCLE_S) + 1
        cands = range((max(k_lo, 0) + 1) * size - 1 - j, (k_hi + 1) * size - 1 - j + 1, size)
        return self._overlapping(cands, ts_from, ts_to)

    # -- signals -----------------------------------------------------------------------------

    def _protocols(self, n: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Protocol table (fields, channels) of the cells ``n`` now on the channels."""
        for idx in np.flatnonzero(n != self._channel_n):
            self._table[:, idx] = self._cell(int(n[idx]))[1].row()
            self._channel_n[idx] = n[idx]
        return self._table

    def ideal(self, ts: float) -> tuple[npt.NDArray[np.float64], ...]:
        """Noise-free voltage, current and capacity of every channel at epoch ``ts``.

        Current is negative while discharging; capacity is the Ah moved in the current step
        (positive in both directions, 0 at rest and idle)."""
        if not ts >= self.start_ts:
            raise ValueError(f"ts must be >= start_ts ({self.start_ts}), got {ts}")
        size = self._n_channels
        x = ((ts - self.start_ts) * self.speed + self._phase).ravel()
        k = np.floor(x / CYCLE_S)
        h = (x - k * CYCLE_S) * (SLOT_H / CYCLE_S)  # process hours into the slot
        n = ((k.astype(np.int64) + 1) * size - 1 - self._flat.ravel()).astype(np.int64)
        t_cc, tau, t_chg, t_dis0, t_dis, t_end, q_cc, r, v_d0 = self._protocols(n)
        cv_t = np.maximum(h - t_cc, 0.0)
        decay = np.exp(-cv_t / tau)
        steps = [h < t_cc, h < t_chg, h < t_dis0, h < t_end]
        u = np.clip((h - t_dis0) / t_dis, 0.0, 1.0)
        relax = -np.expm1(-np.maximum(h - t_chg, 0.0) / RELAX_H)
        rebound = -np.expm1(-np.maximum(h - t_end, 0.0) / RELAX_H)
        voltage = np.select(
            steps,
            [
                V_START + (V_END - V_START) * _cc_shape(np.minimum(h / t_cc, 1.0)),
                np.full_like(h, V_END),
                V_END - CV_CUTOFF_AMPS * r - RELAX_V * relax,
                v_d0 - (v_d0 - V_CUTOFF) * _dis_shape(u),
            ],
            V_CUTOFF + DISCHARGE_AMPS * r + REBOUND_V * rebound,
        )
        current = np.select(
            steps,
            [
                np.full_like(h, CC_AMPS),
                CC_AMPS * decay,
                np.zeros_like(h),
                np.full_like(h, -DISCHARGE_AMPS),
            ],
            0.0,
        )
        capacity = np.select(
            steps,
            [
                CC_AMPS * h,
                q_cc + CC_AMPS * tau * (1.0 - decay),
                np.zeros_like(h),
                DISCHARGE_AMPS * np.maximum(h - t_dis0, 0.0),
            ],
            0.0,
        )
        shape = self._phase.shape
        return voltage.reshape(shape), current.reshape(shape), capacity.reshape(shape)

    def cabinet_power_kw(self, ts: float) -> npt.NDArray[np.float64]:
        """Grid power of each cabinet at epoch ``ts`` in kW, noise-free, shape (cabinets,).

        DOMAIN.md 2.2 per channel: charging draws cell power / ``ETA_CONV``, discharging feeds
        back ``ETA_REC`` of the cell power; each cabinet adds ``AUX_KW``. This is the process
        power at that point of the protocol; energy over wall time is compressed by
        ``time_factor``."""
        voltage, current, _ = self.ideal(ts)
        cell_w = voltage * current
        grid_w = np.where(cell_w > 0.0, cell_w / ETA_CONV, ETA_REC * cell_w)
        return np.asarray(grid_w.sum(axis=1) / 1000.0 + AUX_KW, dtype=np.float64)

    def sample(self, ts: float) -> FormationSample:
        """Draw the sample taken at epoch ``ts`` (call with increasing times for a run)."""
        voltage, current, capacity = self.ideal(ts)
        shape = voltage.shape
        rng = self._rng
        values = {
            "voltage": voltage + rng.normal(0.0, VOLTAGE.sigma, shape),
            "current": current + rng.normal(0.0, CURRENT.sigma, shape),
            "capacity": np.maximum(capacity + rng.normal(0.0, CAPACITY.sigma, shape), 0.0),
            "cell_temperature": rng.normal(CELL_TEMPERATURE.mean, CELL_TEMPERATURE.sigma, shape),
        }
        if self._injector.faults:
            centers: dict[str, npt.ArrayLike] = {
                "voltage": voltage,
                "current": current,
                "capacity": capacity,
                "cell_temperature": CELL_TEMPERATURE.mean,
            }
            self._injector.apply(ts, values, centers)
        skew = self._injector.clock_offsets(ts) if self._injector.faults else None
        return FormationSample(
            ts=ts,
            voltage=values["voltage"],
            current=values["current"],
            capacity=values["capacity"],
            temperature=values["cell_temperature"],
            skew=skew,
        )


def result_payload(result: CellResult, record: CellRecord) -> dict[str, Any]:
    """JSON-ready formation result of one cell with its genealogy.

    Keys: ``cell`` (id), ``n``, ``roll``, ``lane``, ``md_from``/``md_to`` (in-roll metres),
    ``cabinet``, ``channel``, ``equipment`` (``cab01-ch02``), ``ts_start``/``ts_end`` (epoch s),
    ``charge_ah``, ``discharge_ah``, ``fce``, ``e_chg_wh``, ``e_dis_wh``, ``e_rec_wh``,
    ``dcir_mohm``, ``formation_h``. Ground truth (``params``, ``lot_scale``) stays out.
    """
    if result.n != record.n:
        raise ValueError(f"record is of cell {record.n}, result of cell {result.n}")
    return {
        "cell": result.cell_id,
        "n": result.n,
        "roll": record.roll_id,
        "lane": record.lane,
        "md_from": round(record.md_from_m, 3),
        "md_to": round(record.md_to_m, 3),
        "cabinet": result.cabinet,
        "channel": result.channel,
        "equipment": record.equipment,
        "ts_start": round(result.start_ts, 3),
        "ts_end": round(result.end_ts, 3),
        "charge_ah": round(result.charge_ah, 4),
        "discharge_ah": round(result.discharge_ah, 4),
        "fce": round(result.fce, 5),
        "e_chg_wh": round(result.energy_charged_wh, 3),
        "e_dis_wh": round(result.energy_discharged_wh, 3),
        "e_rec_wh": round(result.energy_recovered_wh, 3),
        "dcir_mohm": round(result.dcir_mohm, 3),
        "formation_h": round(result.formation_h, 3),
    }
