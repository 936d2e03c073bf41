"""Publisher: envelopes into the outbox, and a forwarder from the outbox to the broker (QoS 1).

`Publisher.send` numbers and encodes an envelope and puts it into the outbox (`edge.outbox`);
it never blocks and never waits for the network, so a slow or absent broker cannot slow
collection: the outbox absorbs the outage up to its bounds, and what its drop policy discards
is counted. While the broker is connected the forwarder hands the oldest waiting envelopes to
paho, at most ``inflight`` at a time, and removes one from the outbox only when the broker's
PUBACK for it arrives (acknowledgements that arrive together are removed in one transaction).
Anything not acknowledged stays in the outbox, and with a SQLite outbox it is sent again after
a restart of the agent: an envelope can reach the broker twice, as the identical bytes with the
same sequence number, which the server drops by (edge id, seq).

Order per topic (and overall) is kept: envelopes go out in sequence order on one connection,
and after a reconnect paho first re-sends those that were in flight (the same message ids,
flagged as duplicates); new ones follow only when all of those are acknowledged. Should that
not happen within ``resend_timeout_s`` the forwarder publishes them again itself.

paho's network I/O runs on the event loop (`edge.mqtt_loop.LoopDriver`), as the MQTT sources'
does: no network thread competes with collection for the interpreter, a PUBACK is handled
where it is read, and all bookkeeping, and every call into the outbox, happens on the loop.
Connection attempts run in a worker thread with a backoff of one second doubling up to
``max_retry_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from edge.mqtt_loop import LoopDriver
from edge.outbox import Item, Mark, MemoryOutbox, Outbox, SqliteOutbox
from models.batch import Batch, StatsBatch
from models.messages import Envelope, Kind, Payload
from models.wire import encode

__all__ = ["Publisher"]

log = logging.getLogger("cellwatch.edge.publisher")

MAX_RETRY_S = 5
#: Seconds between two log lines about envelopes that could not be stored.
ERROR_LOG_INTERVAL_S = 10.0


class Publisher:
    """Publishes envelopes of one edge through an outbox; see the module docstring.

    ``outbox`` defaults to a `MemoryOutbox` bounded by ``max_pending`` envelopes; the publisher
    owns it and closes it on leaving. Counters and gauges (all read on the loop):

    * ``published``: envelopes the broker acknowledged since start;
    * ``pending``: envelopes in the outbox, waiting or in flight; ``outbox_bytes`` their bytes;
    * ``dropped``: envelopes lost since start, by the outbox bounds or because they could not
      be stored (``store_errors``, e.g. a full disk); ``rejected``: envelopes that could not be
      encoded (a bug, logged with the topic);
    * ``lag_s``: age of the oldest waiting envelope (None when the outbox is empty);
    * ``seq``: last sequence number used, ``start_seq`` the one before this run's first;
    * ``connected``, ``last_error``, ``inflight``, ``reconnects``, ``resent``.

    Reconnect attempts back off from one second up to ``max_retry_s``. Closing waits up to
    ``drain_s`` for the broker to acknowledge what is pending, if it is connected.
    """

    def __init__(
        self,
        broker_url: str,
        edge_id: str,
        *,
        outbox: Outbox | None = None,
        max_pending: int = 100_000,
        inflight: int = 100,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        keepalive_s: int = 30,
        max_retry_s: float = MAX_RETRY_S,
        drain_s: float = 2.0,
        resend_timeout_s: float | None = None,
    ) -> None:
        url = urlsplit(broker_url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 1883
        self._keepalive = keepalive_s
        self.edge_id = edge_id
        self.outbox: Outbox = outbox if outbox is not None else MemoryOutbox(max_items=max_pending)
        self.max_pending = max_pending
        self._inflight_max = max(1, inflight)
        #: paho message id -> the item it carries, until its PUBACK.
        self._inflight: dict[int, Item] = {}
        #: Highest sequence number handed to paho; the forwarder continues above it.
        self._sent_upto = 0
        #: Message ids in flight when the connection was lost: new ones wait for them.
        self._held: set[int] = set()
        self._held_timer: asyncio.TimerHandle | None = None
        self._resend_timeout = resend_timeout_s if resend_timeout_s is not None else keepalive_s
        self._acked: list[int] = []
        self._flush_due = False
        self._closed = False
        self.start_seq = self.outbox.start_seq
        self.published = 0
        self.rejected = 0
        self.store_errors = 0
        self.reconnects = 0
        self.resent = 0
        self.connected = False
        self.last_error = ""
        self._ever_connected = False
        self._error_logged = -1e9
        self._drain_s = drain_s
        self._empty = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._max_retry_s = max_retry_s
        self._driver: LoopDriver | None = None
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"cellwatch-{edge_id}-pub"
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.max_inflight_messages_set(self._inflight_max)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # -- counters ---------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        return self.outbox.last_seq

    @property
    def pending(self) -> int:
        return self.outbox.depth

    @property
    def outbox_bytes(self) -> int:
        return self.outbox.nbytes

    @property
    def dropped(self) -> int:
        return self.outbox.dropped + self.store_errors

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def lag_s(self) -> float | None:
        oldest = self.outbox.oldest_ts
        return None if oldest is None else max(0.0, time.time() - oldest)

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port, self._keepalive)
        self._driver = LoopDriver(
            self._client,
            self._connect_failed,
            min_retry_s=min(1.0, self._max_retry_s),
            max_retry_s=self._max_retry_s,
        )
        self._driver.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._flush_acks()
        self._empty.clear()
        if self.connected and self.pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._empty.wait(), self._drain_s)
        self.connected = False
        if self._held_timer is not None:
            self._held_timer.cancel()
        if self._driver is not None:
            await self._driver.stop()  # DISCONNECT if connected, then the socket is closed
            self._driver = None
        self._flush_acks()  # PUBACKs read before the socket closed
        if self.pending:
            if isinstance(self.outbox, SqliteOutbox):
                log.info(
                    "publisher of %s: %d envelope(s) kept in %s for the next start",
                    self.edge_id,
                    self.pending,
                    self.outbox.path,
                )
            else:
                log.warning(
                    "publisher of %s closed with %d envelope(s) not acknowledged; "
                    "they are lost (the outbox is in memory)",
                    self.edge_id,
                    self.pending,
                )
        self._closed = True
        self.outbox.close()

    # -- producer side ----------------------------------------------------------------------

    def send(
        self,
        topic: str,
        kind: Kind,
        items: Sequence[Payload | Batch | StatsBatch],
        marks: Mapping[str, Mark] | None = None,
    ) -> Envelope | None:
        """Number, encode and store one envelope; returns it. Never blocks.

        ``marks`` are stored with it in one transaction (see `edge.outbox`).

        Returns None, counted and logged, when the envelope could not be stored: not
        encodable (``rejected``) or the outbox failed (``store_errors``, part of ``dropped``).
        An envelope the drop policy refuses is returned (it has its number) and counted.
        """
        made: list[Envelope] = []
        sent_ts = time.time()
        payload = tuple(items)

        def build(seq: int) -> bytes:
            env = Envelope(self.edge_id, seq, kind, sent_ts, payload)
            made.append(env)
            return encode(env)

        try:
            self.outbox.put(topic, build, marks)
        except (ValueError, TypeError) as e:
            self.rejected += 1
            self._error(f"cannot encode a {kind.value} envelope for {topic}: {e}")
            return None
        except (sqlite3.Error, OSError) as e:
            self.store_errors += 1
            self._error(f"cannot store a {kind.value} envelope for {topic} in the outbox: {e}")
            return None
        self._pump()
        return made[-1]

    def _error(self, what: str) -> None:
        self.last_error = what
        now = time.monotonic()
        if now - self._error_logged >= ERROR_LOG_INTERVAL_S:
            self._error_logged = now
            log.error(
                "publisher of %s: %s (rejected %d, store errors %d so far)",
                self.edge_id,
                what,
                self.rejected,
                self.store_errors,
            )

    # -- forwarder --------------------------------------------------------------------------

    def _pump(self) -> None:
        if not self.connected or self._held or self._closed:
            return
        free = self._inflight_max - len(self._inflight)
        if free <= 0:
            return
        try:
            batch = self.outbox.peek(free, after=self._sent_upto)
        except (sqlite3.Error, OSError) as e:
            self._error(f"cannot read the outbox: {e}")
            return
        for item in batch:
            if not self._publish(item):
                break
        if batch:
            # Out now, not on the loop's next turn: paho only queues the packets and asks for
            # a writable socket, and a turn can hold a window or a burst of reads. What the
            # socket does not take is written when it is writable again.
            self._client.loop_write()

    def _publish(self, item: Item) -> bool:
        info = self._client.publish(item.topic, item.payload, qos=1)
        self._inflight[info.mid] = item
        self._sent_upto = max(self._sent_upto, item.seq)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # paho keeps a QoS 1 message it could not send and sends it after reconnecting.
            self.connected = False
            return False
        return True

    # -- paho's callbacks (on the loop, from `LoopDriver`) ----------------------------------

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure and self._driver is not None:
            self._driver.mark_connected()
        self._connected(not rc.is_failure, str(rc))

    def _connect_failed(self, why: str) -> None:
        self._connected(False, f"cannot connect to {self._host}:{self._port}: {why}")

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._connected(False, f"disconnected: {rc}")

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        self._acked_mid(mid)

    # -- event loop -------------------------------------------------------------------------

    def _connected(self, ok: bool, why: str) -> None:
        if ok and not self.connected:
            if self._ever_connected:
                self.reconnects += 1
            self._ever_connected = True
            log.info(
                "publisher of %s connected to %s:%d (%d waiting, %d in flight)",
                self.edge_id,
                self._host,
                self._port,
                self.pending,
                len(self._inflight),
            )
            if self._inflight:
                # paho re-sends these first; new envelopes must not overtake them.
                self._held = set(self._inflight)
                if self._loop is not None:
                    self._held_timer = self._loop.call_later(
                        self._resend_timeout, self._resend_held
                    )
        elif not ok and self.connected:
            log.warning(
                "publisher of %s: broker %s:%d unavailable (%s); %d envelope(s) kept",
                self.edge_id,
                self._host,
                self._port,
                why,
                self.pending,
            )
        self.connected = ok
        if not ok:
            self.last_error = why
            self._release_held()
        self._pump()

    def _acked_mid(self, mid: int) -> None:
        item = self._inflight.pop(mid, None)
        if item is None:
            return
        self._held.discard(mid)
        if not self._held:
            self._release_held()
        if not self._flush_due and self._loop is not None:
            # PUBACKs scheduled in the same loop iteration are removed in one transaction.
            self._flush_due = True
            self._loop.call_soon(self._flush_acks)
        self._acked.append(item.seq)
        self.published += 1

    def _flush_acks(self) -> None:
        self._flush_due = False
        if self._closed:
            return
        seqs, self._acked = self._acked, []
        if seqs:
            try:
                self.outbox.ack(seqs)
            except (sqlite3.Error, OSError) as e:
                # Still stored: tried again with the next PUBACK; should the agent stop first,
                # they are sent again after its restart (the same seq, deduplicated).
                self._acked = seqs + self._acked
                self._error(f"cannot remove {len(seqs)} acknowledged envelope(s): {e}")
        self._pump()
        if not self.pending:
            self._empty.set()

    def _release_held(self) -> None:
        self._held.clear()
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None

    def _resend_held(self) -> None:
        """paho did not get the re-sent envelopes acknowledged in time: publish them again."""
        self._held_timer = None
        if not self._held or not self.connected:
            return
        stuck = sorted(
            (self._inflight.pop(mid) for mid in self._held if mid in self._inflight),
            key=lambda it: it.seq,
        )
        self._held.clear()
        log.warning(
            "publisher of %s: %d envelope(s) re-sent after reconnecting were not "
            "acknowledged within %.0f s; publishing them again",
            self.edge_id,
            len(stuck),
            self._resend_timeout,
        )
        for item in stuck:
            self.resent += 1
            if not self._publish(item):
                break
        self._pump()
