"""Publisher: envelopes to the broker with QoS 1, held in memory until the broker has them.

Every envelope gets the next sequence number of this edge and waits in a bounded queue. While
the broker is connected, the oldest waiting envelopes are handed to paho, at most
``inflight`` at a time; an envelope leaves memory only when the broker's PUBACK arrives
(``on_publish`` with its message id). paho re-sends the in-flight ones itself after a
reconnect, and the queue drains again once ``on_connect`` reports the broker back. `send` never
blocks and never waits for the network, so a missing broker only grows the queue; beyond
``max_pending`` the oldest waiting envelopes are dropped, counted and logged. paho's network
thread only schedules callbacks onto the event loop; all bookkeeping happens on the loop.

This in-memory queue loses what it holds when the process stops; a durable outbox can take
its place behind the same `send`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from edge.handoff import call_in_loop
from models.messages import Envelope, Kind, Payload
from models.wire import encode

__all__ = ["Publisher"]

log = logging.getLogger("cellwatch.edge.publisher")

MAX_RETRY_S = 5


@dataclass(frozen=True, slots=True)
class _Out:
    seq: int
    topic: str
    payload: bytes


class Publisher:
    """Publishes envelopes of one edge; see the module docstring.

    Counters: ``published`` (acknowledged by the broker), ``pending`` (waiting or in flight),
    ``dropped`` (discarded because ``max_pending`` was exceeded), and ``seq`` (last number used).
    Reconnect attempts back off from one second up to ``max_retry_s``. Closing waits up to
    ``drain_s`` for the broker to acknowledge what is pending, if it is connected.
    """

    def __init__(
        self,
        broker_url: str,
        edge_id: str,
        *,
        max_pending: int = 100_000,
        inflight: int = 100,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        keepalive_s: int = 30,
        max_retry_s: float = MAX_RETRY_S,
        drain_s: float = 2.0,
    ) -> None:
        url = urlsplit(broker_url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 1883
        self._keepalive = keepalive_s
        self.edge_id = edge_id
        self.max_pending = max_pending
        self._inflight_max = max(1, min(inflight, max_pending))
        self._waiting: deque[_Out] = deque()
        self._inflight: dict[int, _Out] = {}
        # Sequence numbers continue across restarts of the agent, because the server remembers
        # (edge id, seq) pairs to drop duplicates: a restart at 0 would make it discard
        # everything until the old count is passed. Microseconds since the epoch at start are
        # above any number an earlier run used unless it sent over a million envelopes a second
        # or the clock went back.
        self.seq = time.time_ns() // 1000
        #: The number before this run's first envelope.
        self.start_seq = self.seq
        self.published = 0
        self.dropped = 0
        self.connected = False
        self.last_error = ""
        self._drain_s = drain_s
        self._empty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"cellwatch-{edge_id}-pub"
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.max_inflight_messages_set(self._inflight_max)
        self._client.reconnect_delay_set(min_delay=min(1, max_retry_s), max_delay=max_retry_s)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    @property
    def pending(self) -> int:
        return len(self._waiting) + len(self._inflight)

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port, self._keepalive)
        self._client.loop_start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._empty.clear()
        if self.connected and self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), self._drain_s)
        self.connected = False
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        if self.pending:
            log.warning("publisher of %s closed with %d envelope(s) not acknowledged",
                        self.edge_id, self.pending)

    def send(self, topic: str, kind: Kind, items: Sequence[Payload]) -> Envelope:
        """Number, encode and queue one envelope; returns it. Never blocks."""
        self.seq += 1
        env = Envelope(self.edge_id, self.seq, kind, time.time(), tuple(items))
        self._waiting.append(_Out(env.seq, topic, encode(env)))
        over = self.pending - self.max_pending
        if over > 0:
            lost = [self._waiting.popleft() for _ in range(min(over, len(self._waiting)))]
            self.dropped += len(lost)
            if lost:
                log.error("publisher of %s: %d envelope(s) waiting, over the bound of %d; "
                          "dropped seq %d..%d (%d dropped so far)", self.edge_id, self.pending,
                          self.max_pending, lost[0].seq, lost[-1].seq, self.dropped)
        self._pump()
        return env

    def _pump(self) -> None:
        while self.connected and self._waiting and len(self._inflight) < self._inflight_max:
            out = self._waiting.popleft()
            info = self._client.publish(out.topic, out.payload, qos=1)
            self._inflight[info.mid] = out
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                # paho keeps a QoS 1 message it could not send and sends it after reconnecting.
                self.connected = False

    # -- paho thread: hand everything to the loop ------------------------------------------

    def _call(self, fn: Any, *args: Any) -> None:
        call_in_loop(self._loop, fn, *args)

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._call(self._connected, not rc.is_failure, str(rc))

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        self._call(self._connected, False, f"cannot connect to {self._host}:{self._port}")

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._call(self._connected, False, f"disconnected: {rc}")

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        self._call(self._acked, mid)

    # -- event loop -------------------------------------------------------------------------

    def _connected(self, ok: bool, why: str) -> None:
        if ok != self.connected:
            if ok:
                log.info("publisher of %s connected to %s:%d", self.edge_id, self._host, self._port)
            else:
                log.warning("publisher of %s: broker %s:%d unavailable (%s); %d envelope(s) kept",
                            self.edge_id, self._host, self._port, why, self.pending)
        self.connected = ok
        if not ok:
            self.last_error = why
        self._pump()

    def _acked(self, mid: int) -> None:
        if self._inflight.pop(mid, None) is not None:
            self.published += 1
        self._pump()
        if not self.pending:
            self._empty.set()
