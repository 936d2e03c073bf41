"""OPC UA source: subscriptions that heal themselves, backfill their gaps and report skew.

One source is one server. Each connect starts from scratch: a new `asyncua.Client` (asyncua's
reconnect of one client object can hang), security as configured (`edge.opcua_security`),
namespace URIs resolved to indexes again (a server may renumber them after a restart), browse
paths translated and monitored items created in batches within the server's OperationLimits
(`edge.opcua_nodes`). Every node gets its sampling interval, queue size and absolute deadband.

Data: the OPC UA status code becomes the reading's quality (good/uncertain/bad; a bad sample
without a value is NaN), the source timestamp is the reading's time (the server timestamp
stands in when there is none), and the server timestamp is kept beside it. Clock skew is the
median of ``source_ts - received_ts`` over live samples (`edge.clock_skew`), shown in the
status and logged once when it passes ``clock_skew_warn_s``.

Self-healing (`edge.watchdog`): a keepalive watchdog per subscription (no publish response
within ``keepalive_count`` publishing intervals plus a grace of two, at least 0.5 s) and a
stale watchdog per node (no new sample for ``stale_after_s``: counted in ``stale``, logged,
and when every watched node is stale, the same escalation). Escalation climbs resubscribe ->
new session -> new client; fresh data resets it. A lost connection is retried with a backoff
from 0.5 s up to ``retry_max_s``, so data flows again within about that much after a server
comes back.

Backfill (`edge.opcua_history`): after every (re)subscribe, nodes that delivered before are
read back from the server's history from their last source timestamp on. Live notifications of
a node are held until its history is in, then released without the samples history already
gave, so the gap is filled in order, without duplicates; backfilled readings are marked and
counted in ``backfilled``. A new subscription's initial value that repeats the last sample is
dropped for the same reason. Across a restart of the agent the last source timestamps come
from the outbox: `mark` is stored with the station's telemetry in one transaction and
`resume` reads it back, so even after ``kill -9`` the gap starts exactly after the last sample
the outbox holds.

Failures are logged with the source id and endpoint (the same reason once, then every minute
while it lasts), shown in `status()`, and never end the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import time
from datetime import UTC, datetime
from numbers import Real
from typing import Any, Self

import numpy as np
from asyncua import Client, ua
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    Subscription,
)

from edge.clock_skew import SkewEstimator
from edge.opcua_history import HistoryUnsupported, read_raw
from edge.opcua_nodes import (
    OperationLimits,
    Resolved,
    batches,
    create_items,
    describe,
    item_request,
    read_limits,
    resolve,
)
from edge.opcua_security import SecurityError, secure
from edge.outbox import Mark
from edge.source import QueuedSource
from edge.watchdog import Action, Escalation, StaleWatchdog, keepalive_deadline
from models import plant
from models.messages import Quality, Reading, SeriesKey

__all__ = ["OpcUaSource", "quality_of"]

log = logging.getLogger("cellwatch.edge.opcua")

#: Notifications asyncua buffers for us; the pump moves them on at once, so this only fills
#: when the event loop is starved, and then asyncua logs what it drops.
SUBSCRIPTION_BUFFER = 100_000
FIRST_RETRY_S = 0.5
#: Session timeout asked for: how long a server keeps the session of a vanished gateway.
SESSION_TIMEOUT_MS = 600_000
#: Shortest subscription lifetime asked for, in seconds of publishing without a request.
MIN_LIFETIME_S = 60.0
#: History is read up to this far past the gateway's clock, for device clocks running ahead.
BACKFILL_END_MARGIN_S = 3600.0
#: A watchdog tick this late means the gateway itself stalled; the watchdogs then wait.
STALL_S = 0.25
#: A failure that keeps repeating is logged again after this many seconds.
REPEAT_LOG_S = 60.0
#: Nodes named one by one in a log line before the rest are only counted.
NAMED_IN_LOG = 20
_AUTH_CODES = {
    ua.StatusCodes.BadUserAccessDenied,
    ua.StatusCodes.BadIdentityTokenInvalid,
    ua.StatusCodes.BadIdentityTokenRejected,
}


def quality_of(status: ua.StatusCode | None) -> Quality:
    """Map an OPC UA status code onto a quality by its severity bits (a missing code is Good)."""
    if status is None or status.is_good():
        return Quality.GOOD
    if status.is_uncertain():
        return Quality.UNCERTAIN
    return Quality.BAD


def _epoch(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


class OpcUaSource(QueuedSource):
    """Readings from the nodes of one OPC UA server; see the module docstring.

    Besides the `QueuedSource` counters: ``unresolved`` configured nodes could not be found or
    monitored at the last connect (each is logged with the source id and its address);
    ``connects`` sessions were established; ``resubscribes``, ``session_renewals`` and
    ``client_renewals`` count the escalation steps taken; ``stale_total`` counts nodes going
    stale (``stale`` is how many are stale now). ``subscribed`` nodes are monitored now;
    ``subscribe_s`` is how long the last subscribe took (resolving the nodes and creating the
    monitored items) and ``monitor_calls`` how many CreateMonitoredItems calls it made under
    ``limits``. ``backfill_calls`` counts HistoryRead calls; ``repeats`` counts samples
    dropped because they were delivered already (a new subscription's first value, a live
    sample the backfill also read). ``channel_security`` is the
    policy and mode of the current connection (``None/None`` when unsecured).
    """

    def __init__(self, cfg: plant.OpcUaSource, queue_size: int | None = None) -> None:
        super().__init__(cfg.id, log, *(() if queue_size is None else (queue_size,)))
        self.cfg = cfg
        self.unresolved = 0
        self.connects = 0
        self.resubscribes = 0
        self.session_renewals = 0
        self.client_renewals = 0
        self.stale_total = 0
        self.subscribed = 0
        self.subscribe_s: float | None = None
        self.monitor_calls = 0
        self.backfill_calls = 0
        self.repeats = 0
        self.limits: OperationLimits | None = None
        self.channel_security = ""
        self._task: asyncio.Task[None] | None = None
        # Scalar nodes feed one series; element (array) nodes one per element, named by their
        # template once the array's length is known.
        self._keys = [
            SeriesKey(cfg.line, cfg.station, n.equipment or n.elements or "", n.param)
            for n in cfg.nodes
        ]
        self._element_keys: dict[int, list[SeriesKey]] = {}
        limits = {
            i + 1: n.stale_after_s if n.stale_after_s is not None else cfg.stale_after_s
            for i, n in enumerate(cfg.nodes)
        }
        self._stale = StaleWatchdog(
            {h: s for h, s in limits.items() if s is not None}, time.monotonic()
        )
        self._recovered: list[int] = []
        self._ladder = Escalation()
        self._skew = SkewEstimator(cfg.id, cfg.clock_skew_warn_s, log, name=self._node_name)
        self._last_ts: dict[int, float] = {}
        self._marked_at = 0  # `readings` when the last mark was taken
        self._initial: set[int] = set()
        self._held: dict[int, list[tuple[list[Reading], bool, float | None]]] | None = None
        self._failure: str | None = None
        self._failure_logged = 0.0
        self._failures = 0

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"opcua-{self.id}")
        return self

    # -- durable marks ----------------------------------------------------------------------

    @functools.cached_property
    def fingerprint(self) -> str:
        """A digest of the endpoint and the node addresses in order: what a mark's positions
        refer to."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.cfg.endpoint.encode())
        for n in self.cfg.nodes:
            h.update(b"\0" + describe(n).encode())
        return h.hexdigest()

    def mark(self) -> Mark | None:
        """How far collection has reached: the source timestamp of the last sample emitted of
        every node (NaN where none was), for the outbox to store with the envelope that holds
        those samples. None when nothing would use it (``backfill`` off) or nothing was emitted
        since the last mark."""
        if not self.cfg.backfill or not self._last_ts or self.readings == self._marked_at:
            return None
        self._marked_at = self.readings
        state = np.full(len(self._keys), np.nan)
        last = self._last_ts
        state[np.fromiter(last.keys(), np.intp, len(last)) - 1] = np.fromiter(
            last.values(), np.float64, len(last)
        )
        return Mark(self.fingerprint, state.tobytes())

    def resume(self, mark: Mark | None) -> int:
        """Continue where a previous run's stored mark says collection had reached: at the
        first subscription every node's gap since then is read from history (a restart after
        ``kill -9`` then loses nothing the server kept). Returns the nodes resumed; a mark of
        another configuration is ignored, with a warning."""
        if mark is None or not self.cfg.backfill:
            return 0
        state = np.frombuffer(mark.state, np.float64)
        if mark.fingerprint != self.fingerprint or state.shape[0] != len(self._keys):
            log.warning(
                "source %s: the outbox holds the collection mark of other nodes (the "
                "configuration changed); not backfilling from it",
                self.id,
            )
            return 0
        known = np.flatnonzero(np.isfinite(state))
        for i in known:
            self._last_ts[int(i) + 1] = float(state[i])
        if known.size:
            log.info(
                "source %s: resuming %d node(s) from the outbox's mark (last sample %s)",
                self.id,
                known.size,
                datetime.fromtimestamp(float(np.max(state[known])), UTC).isoformat(),
            )
        return int(known.size)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._release_all()  # live readings held for a backfill that never came
        self._close_stream()

    # -- connection loop --------------------------------------------------------------------

    async def _run(self) -> None:
        delay = FIRST_RETRY_S
        while True:
            self.state = "connecting"
            connects = self.connects
            serious = False
            try:
                await self._client()
                reason = None  # the ladder asked for a new client: make it at once
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any failure means: log, wait, retry
                reason = self._describe(e)
                self.last_error = reason
                serious = isinstance(e, SecurityError) or self._auth_refused(e)
            self.state = "disconnected"
            if self.connects > connects:
                delay = FIRST_RETRY_S
            if reason is None:
                continue
            self._log_failure(reason, delay, logging.ERROR if serious else logging.WARNING)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cfg.retry_max_s)

    @staticmethod
    def _auth_refused(e: Exception) -> bool:
        return isinstance(e, ua.UaStatusCodeError) and getattr(e, "code", None) in _AUTH_CODES

    def _describe(self, e: Exception) -> str:
        if self._auth_refused(e):
            who = f"user {self.cfg.username!r}" if self.cfg.username else "an anonymous session"
            return f"the server refused {who} ({type(e).__name__})"
        if isinstance(e, TimeoutError):
            return f"no answer within {self.cfg.timeout_s:g} s"
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__

    def _log_failure(self, reason: str, delay: float, level: int) -> None:
        now = time.monotonic()
        self._failures += 1
        if reason == self._failure and now - self._failure_logged < REPEAT_LOG_S:
            return
        again = f" (still, after {self._failures} attempts)" if reason == self._failure else ""
        log.log(
            level,
            "source %s (%s): %s%s; retrying in %.1f s",
            self.id,
            self.cfg.endpoint,
            reason,
            again,
            delay,
        )
        if reason != self._failure:
            self._failures = 1
        self._failure, self._failure_logged = reason, now

    async def _client(self) -> None:
        """One client: connect, then sessions until the ladder asks for a new client."""
        cfg = self.cfg
        client = Client(cfg.endpoint, timeout=cfg.timeout_s)
        client.session_timeout = SESSION_TIMEOUT_MS
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            self.last_error = f"connection lost: {exc}"
            lost.set()

        client.connection_lost_callback = on_lost
        try:
            await secure(client, cfg)
            await asyncio.wait_for(client.connect(), cfg.timeout_s)
            policy = client.security_policy
            mode = ua.MessageSecurityMode(policy.Mode).name
            self.channel_security = f"{policy.URI.rsplit('#', 1)[-1]}/{mode}"
            while True:
                action = await self._session(client, lost)
                if action is Action.NEW_CLIENT:
                    self.client_renewals += 1
                    return
                self.session_renewals += 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), cfg.timeout_s)
                lost.clear()
                await asyncio.wait_for(client.connect(), cfg.timeout_s)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), min(cfg.timeout_s, 2.0))

    async def _session(self, client: Client, lost: asyncio.Event) -> Action:
        """One session: resolve the nodes, then subscriptions until the ladder climbs higher."""
        started = time.monotonic()
        self.limits = await read_limits(client, self.cfg.batch_size)
        resolved = await resolve(client, self.cfg, self.limits.translate)
        self._log_unresolved(resolved.failed)
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        while True:
            action = await self._subscription(client, resolved, lost, started)
            if action is not Action.RESUBSCRIBE:
                return action
            self.resubscribes += 1
            started = time.monotonic()

    def _where(self, handle: int) -> str:
        return describe(self.cfg.nodes[handle - 1])

    def _node_name(self, handle: object) -> str:
        assert isinstance(handle, int)
        return f"{self._keys[handle - 1]} ({self._where(handle)})"

    def _log_unresolved(self, failed: list[tuple[int, str]]) -> None:
        for handle, why in failed[:NAMED_IN_LOG]:
            log.error("source %s: cannot subscribe %s: %s", self.id, self._where(handle), why)
        if len(failed) > NAMED_IN_LOG:
            log.error(
                "source %s: %d more nodes cannot be subscribed", self.id, len(failed) - NAMED_IN_LOG
            )

    async def _subscription(
        self, client: Client, resolved: Resolved, lost: asyncio.Event, started: float
    ) -> Action:
        """One subscription: create it, fill the gap, pump and watch it until an action."""
        cfg = self.cfg
        assert self.limits is not None
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = cfg.publishing_interval_ms
        params.RequestedMaxKeepAliveCount = cfg.keepalive_count
        params.RequestedLifetimeCount = max(
            3 * cfg.keepalive_count,
            math.ceil(MIN_LIFETIME_S * 1000 / cfg.publishing_interval_ms),
        )
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0
        # Not Client.create_subscription: its own stale watchdog would recreate the subscription
        # behind this one's back; the escalation here is the one in charge.
        sub = Subscription(
            client.uaclient.session,
            params,
            None,
            queue_maxsize=SUBSCRIPTION_BUFFER,
            overflow=OverflowPolicy.WARN,
        )
        revised = await sub.init()
        deadline = keepalive_deadline(
            revised.RevisedPublishingInterval or cfg.publishing_interval_ms,
            revised.RevisedMaxKeepAliveCount or cfg.keepalive_count,
        )
        action: Action | None = None
        try:
            requests = [
                item_request(nid, h, cfg.nodes[h - 1], cfg) for h, nid in resolved.node_ids.items()
            ]
            ok, refused, calls = await create_items(sub, requests, self.limits.monitored_items)
            # This frame lives as long as the subscription; the requests (five objects a node,
            # several megabytes at 10k nodes) are not needed once the items exist.
            del requests
            self.monitor_calls = calls
            refusals = [(h, f"server refused to monitor it: {why}") for h, why in refused.items()]
            self._log_unresolved(refusals)
            failed = resolved.failed + refusals
            self.unresolved = len(failed)
            if failed:
                last = self._where(failed[-1][0])
                self.last_error = f"{self.unresolved} node(s) not found, last: {last}"
            self.subscribed = len(ok)
            self.subscribe_s = time.monotonic() - started
            now = time.monotonic()
            self._initial = set(ok)
            self._stale.restart(now, ok)
            gap = [(h, resolved.node_ids[h]) for h in ok if h in self._last_ts]
            self._hold(gap if cfg.backfill else [])
            self.state = "connected"
            self._failure = None
            if self.unresolved == 0:
                self.last_error = ""
            log.info(
                "source %s connected to %s (%s): %d of %d nodes subscribed in %.2f s "
                "(%d CreateMonitoredItems calls of at most %d)",
                self.id,
                cfg.endpoint,
                self.channel_security,
                len(ok),
                len(cfg.nodes),
                self.subscribe_s,
                calls,
                self.limits.monitored_items,
            )
            pump = asyncio.create_task(self._pump(sub), name=f"opcua-{self.id}-pump")
            try:
                if self._held is not None:
                    await self._backfill(client, gap)
                action = await self._watch(sub, pump, lost, deadline)
                return action
            finally:
                # Live readings still held (the backfill was cut short) wait for the next one.
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
        finally:
            if action is Action.RESUBSCRIBE and not lost.is_set():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sub.delete(), min(cfg.timeout_s, 2.0))

    # -- watchdogs --------------------------------------------------------------------------

    async def _watch(
        self,
        sub: Subscription,
        pump: asyncio.Task[Action | None],
        lost: asyncio.Event,
        deadline: float,
    ) -> Action:
        tick = min(0.1, deadline / 5)
        stall = max(STALL_S, 3 * tick)
        waiter = asyncio.create_task(lost.wait())
        since = previous = time.monotonic()
        try:
            while True:
                await asyncio.wait({pump, waiter}, timeout=tick)
                if lost.is_set():
                    raise ConnectionError(self.last_error or "connection lost")
                if pump.done():
                    result = pump.result()
                    if result is None:
                        raise ConnectionError("the subscription ended")
                    return result
                now = time.monotonic()
                if now - previous > stall:
                    # This process stalled (CPU starved, a blocking call): answers may sit
                    # unread in the socket, so nothing is judged until they had a chance.
                    since = previous = now
                    continue
                previous = now
                self.clock_skew_s = self._skew.update(now)
                quiet = now - max(sub.last_publish_at or since, since)
                if quiet > deadline:
                    return self._escalate(
                        now,
                        f"no publish response or keepalive for {quiet:.1f} s "
                        f"(deadline {deadline:.2f} s)",
                    )
                if self._stale:
                    action = self._check_stale(now)
                    if action is not None:
                        return action
        finally:
            waiter.cancel()

    def _escalate(self, now: float, why: str) -> Action:
        action = self._ladder.next(now)
        log.warning("source %s (%s): %s; next: %s", self.id, self.cfg.endpoint, why, action)
        self.last_error = f"{why}; {action}"
        return action

    def _check_stale(self, now: float) -> Action | None:
        newly = self._stale.check(now)
        if newly:
            self.stale_total += len(newly)
            names = ", ".join(self._where(h) for h in newly[:NAMED_IN_LOG])
            more = f" and {len(newly) - NAMED_IN_LOG} more" if len(newly) > NAMED_IN_LOG else ""
            log.warning(
                "source %s: %d node(s) stale (no new sample within stale_after_s): %s%s",
                self.id,
                len(newly),
                names,
                more,
            )
        if self._recovered:
            log.info("source %s: %d stale node(s) deliver again", self.id, len(self._recovered))
            self._recovered.clear()
        self.stale = len(self._stale.stale)
        if self._stale.all_stale(now):
            return self._escalate(now, f"all {len(self._stale.active)} watched nodes are stale")
        return None

    # -- data -------------------------------------------------------------------------------

    async def _pump(self, sub: Subscription) -> Action | None:
        async for ev in sub:
            if isinstance(ev, DataChangeEvent):
                mi = ev.data.monitored_item
                self._on_change(mi.ClientHandle, mi.Value, ev.value)
            elif isinstance(ev, StatusChangeEvent) and ev.notification.Status.is_bad():
                status = ev.notification.Status
                if status.value == ua.StatusCodes.BadShutdown:
                    raise ConnectionError("the server is shutting down")
                return self._escalate(
                    time.monotonic(), f"the server ended the subscription ({status.name})"
                )
        return None

    def _readings(
        self, handle: int, dv: ua.DataValue | None, value: Any, now: float, backfilled: bool
    ) -> tuple[list[Reading], float | None] | None:
        """The readings of one DataValue (one, or one per element of an array node) and its
        source timestamp; None when nothing in it could be read (rejected and counted)."""
        if dv is None:
            dv = ua.DataValue()
        quality = quality_of(dv.StatusCode)
        src = _epoch(dv.SourceTimestamp)
        srv = _epoch(dv.ServerTimestamp)
        ts = src if src is not None else srv if srv is not None else now
        if self.cfg.nodes[handle - 1].elements is not None:
            out = self._elements(handle, value, quality, ts, now, srv, backfilled)
            return (out, src) if out else None
        if isinstance(value, Real) and not isinstance(value, bool):
            number = float(value)
        elif quality is not Quality.GOOD:
            number = math.nan  # a bad sample need not carry a value; its quality says enough
        else:
            self._reject(
                f"{self._where(handle)}: non-numeric value {value!r} ({type(value).__name__})"
            )
            return None
        return [Reading(self._keys[handle - 1], ts, number, quality, now, srv, backfilled)], src

    def _elements(
        self,
        handle: int,
        value: Any,
        quality: Quality,
        ts: float,
        now: float,
        srv: float | None,
        backfilled: bool,
    ) -> list[Reading]:
        """Element k of an array node's value as a reading of the k-th equipment. A bad
        sample without an array marks every element known from earlier arrays bad."""
        if isinstance(value, list | tuple):
            keys = self._keys_for(handle, len(value))
            if keys is None:
                return []
            out = []
            for k, (key, x) in enumerate(zip(keys, value, strict=True)):
                if isinstance(x, Real) and not isinstance(x, bool):
                    out.append(Reading(key, ts, float(x), quality, now, srv, backfilled))
                elif quality is not Quality.GOOD:
                    out.append(Reading(key, ts, math.nan, quality, now, srv, backfilled))
                else:
                    self._reject(f"{self._where(handle)}[{k}]: non-numeric element {x!r}")
            return out
        known = self._element_keys.get(handle)
        if quality is not Quality.GOOD and known:
            return [Reading(k, ts, math.nan, quality, now, srv, backfilled) for k in known]
        self._reject(
            f"{self._where(handle)}: elements need an array value, got {value!r} "
            f"({type(value).__name__})"
        )
        return []

    def _keys_for(self, handle: int, n: int) -> list[SeriesKey] | None:
        keys = self._element_keys.get(handle)
        if keys is not None and len(keys) == n:
            return keys
        node = self.cfg.nodes[handle - 1]
        assert node.elements is not None
        names = [node.elements.format(k=k) for k in range(1, n + 1)]
        wrong = [e for e in names if not plant.is_identifier(e)]
        if wrong:
            self._reject(f"{self._where(handle)}: element equipment {wrong[0]!r} is not an id")
            return None
        cfg = self.cfg
        keys = self._element_keys[handle] = [
            SeriesKey(cfg.line, cfg.station, e, node.param) for e in names
        ]
        return keys

    def _on_change(self, handle: int, dv: ua.DataValue | None, value: Any) -> None:
        if not 0 < handle <= len(self._keys):
            return
        initial = handle in self._initial
        if initial:
            self._initial.discard(handle)
            last = self._last_ts.get(handle)
            if dv is not None and last is not None:
                ts = _epoch(dv.SourceTimestamp) or _epoch(dv.ServerTimestamp)
                if ts is not None and ts <= last:
                    self.repeats += 1
                    return  # the sample we have, sent again as the new subscription's first
        got = self._readings(handle, dv, value, time.time(), False)
        if got is None:
            return
        readings, src = got
        if self._held is not None and handle in self._held:
            self._held[handle].append((readings, initial, src))
            return
        self._accept(handle, readings, initial, src)

    def _accept(
        self, handle: int, readings: list[Reading], initial: bool, src: float | None
    ) -> None:
        """Emit the readings of one sample of a node (one, or one per element)."""
        first = readings[0]
        last = self._last_ts.get(handle)
        self._last_ts[handle] = first.ts if last is None else max(last, first.ts)
        for reading in readings:
            self._emit(reading)
        if self._stale.seen(handle, time.monotonic()):
            self._recovered.append(handle)
        self._ladder.healthy()
        if not initial and src is not None and first.received_ts is not None:
            self._skew.add(src - first.received_ts, handle)

    # -- backfill ---------------------------------------------------------------------------

    async def _backfill(self, client: Client, gap: list[tuple[int, ua.NodeId]]) -> None:
        """Read the gap of every node in ``gap`` from history and emit it, marked."""
        assert self.limits is not None
        cfg = self.cfg
        now = time.time()
        floor = now - cfg.backfill_max_s
        end = datetime.fromtimestamp(now + BACKFILL_END_MARGIN_S, UTC)
        before, refused, cut = self.backfilled, 0, 0
        for batch in batches(gap, self.limits.history_read):
            since = {h: self._last_ts[h] for h, _ in batch}
            start = min(since.values())
            if start < floor:
                cut += sum(1 for s in since.values() if s < floor)
                start = floor
            try:
                got = await read_raw(client, batch, datetime.fromtimestamp(start, UTC), end)
            except HistoryUnsupported as e:
                log.info(
                    "source %s: the server has no history (%s); gap not backfilled", self.id, e
                )
                self._release_all()
                return
            self.backfill_calls += got.calls
            refused += len(got.refused)
            for handle, _ in batch:
                await self._emit_history(handle, got.values.get(handle, []), since[handle], floor)
                self._release(handle)
        n = self.backfilled - before
        if n or refused or cut:
            log.info(
                "source %s: backfilled %d reading(s) of %d node(s) from history%s%s",
                self.id,
                n,
                len(gap),
                f"; {refused} node(s) have no history" if refused else "",
                f"; {cut} gap(s) longer than backfill_max_s were cut" if cut else "",
            )

    async def _emit_history(
        self, handle: int, values: list[ua.DataValue], since: float, floor: float
    ) -> None:
        now = time.time()
        out: list[list[Reading]] = []
        for dv in values:
            value = dv.Value.Value if dv.Value is not None else None
            got = self._readings(handle, dv, value, now, True)
            if got is not None and got[0][0].ts > since and got[0][0].ts >= floor:
                out.append(got[0])
        out.sort(key=lambda rs: rs[0].ts)
        for readings in out:
            while self._queued >= self.queue_size:  # wait for the consumer, do not drop history
                await asyncio.sleep(0.01)
            ts = readings[0].ts
            self._last_ts[handle] = max(self._last_ts.get(handle, ts), ts)
            for reading in readings:
                self._emit(reading)
            self.backfilled += len(readings)
            if self._stale.seen(handle, time.monotonic()):
                self._recovered.append(handle)

    def _hold(self, gap: list[tuple[int, ua.NodeId]]) -> None:
        """Hold live readings of the nodes in ``gap`` until their history is in. Readings
        still held from a backfill that was cut short stay held (their gap is read again);
        those of nodes that are no longer backfilled are released."""
        held = self._held or {}
        self._held = {h: held.pop(h, []) for h, _ in gap} or None
        for handle, readings in held.items():
            self._flush(handle, readings)

    def _release(self, handle: int) -> None:
        """Emit the live readings held for ``handle`` that its history did not already give."""
        if self._held is None:
            return
        held = self._held.pop(handle, [])
        if not self._held:
            self._held = None
        self._flush(handle, held)

    def _flush(self, handle: int, held: list[tuple[list[Reading], bool, float | None]]) -> None:
        for readings, initial, src in held:
            last = self._last_ts.get(handle)
            if last is not None and readings[0].ts <= last:
                self.repeats += 1  # history (or an earlier subscription) gave it already
                continue
            self._accept(handle, readings, initial, src)

    def _release_all(self) -> None:
        while self._held is not None:
            self._release(next(iter(self._held)))
