"""Running a paho-mqtt client's network I/O on the asyncio event loop instead of its thread.

paho's own network thread (``loop_start``) costs a subscriber at high rates in three ways: each
message takes several system calls (select, reads, the PUBACK through a wake-up socket), every
callback has to be handed to the event loop, and the thread competes with the loop for the GIL,
so while the loop computes a window the network thread waits for the interpreter and the
broker waits for acknowledgements. Measured on a gateway core, that thread, not the parsing or
the detection, capped an agent at about 55,000 values a second.

`LoopDriver` uses paho's interface for external event loops instead: the socket is watched
with ``add_reader``/``add_writer``, `loop_read` and `loop_write` run when it is ready,
``loop_misc`` runs once a second for keepalive, and every paho callback runs on the event loop
thread. What paho's thread did besides I/O is done here: connection attempts (in a worker
thread, since paho's connect and TLS handshake block) with a backoff of 1 s doubling up to
``max_retry_s``, and a new attempt whenever the connection is lost, until `stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["LoopDriver"]

log = logging.getLogger("cellwatch.edge.mqtt")

#: Seconds between two calls of paho's ``loop_misc`` (keepalive pings and their timeout).
MISC_INTERVAL_S = 1.0
#: Seconds one readiness callback may spend reading before it returns to the loop; the selector
#: calls again while data remains. A burst of thousands of queued messages is otherwise read in
#: one go: at 64 packets a call (4 ms of parsing under a 50k values/s burst) every other socket
#: and timer waited behind it, and that wait was most of the agent's 99th-percentile detection
#: latency (34-43 ms; 10-12 ms with about half a millisecond a call, throughput unchanged).
READ_BUDGET_S = 0.0005


class LoopDriver:
    """Drives one paho client on the running loop; ``start`` after ``connect_async``.

    ``on_fail(error)`` is called on the loop for each connection attempt that fails before a
    socket is open (refused, unreachable, TLS handshake); paho's own callbacks report the rest
    (``on_connect`` with a refusal code, ``on_disconnect``).
    """

    def __init__(
        self,
        client: mqtt.Client,
        on_fail: Callable[[str], None],
        *,
        min_retry_s: float = 1.0,
        max_retry_s: float = 5.0,
    ) -> None:
        self.client = client
        self.on_fail = on_fail
        self.min_retry_s = min_retry_s
        self.max_retry_s = max_retry_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None
        self._closed: asyncio.Event | None = None
        self._sock: Any = None
        self._stopping = False
        self._connected_once = False
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        client.on_socket_register_write = self._on_want_write
        client.on_socket_unregister_write = self._on_no_write

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._closed = asyncio.Event()
        self._stopping = False
        self._task = self._loop.create_task(self._run(), name="mqtt-io")

    def mark_connected(self) -> None:
        """The broker accepted the connection: the next loss retries after the shortest wait."""
        self._connected_once = True

    async def stop(self) -> None:
        """Send DISCONNECT if connected, close the socket and end the reconnection task."""
        self._stopping = True
        client = self.client
        if self._sock is not None:
            client.disconnect()
            with contextlib.suppress(OSError):
                client.loop_write()  # DISCONNECT is small: one write sends it
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._forget()
        # paho closes the socket itself after DISCONNECT; one still open is closed here.
        sock = getattr(client, "_sock", None)
        if sock is not None:
            client._sock_close()  # noqa: SLF001 - paho has no public close without DISCONNECT

    # -- reconnection -------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.min_retry_s
        while not self._stopping:
            assert self._closed is not None
            self._closed.clear()
            self._connected_once = False
            try:
                await asyncio.to_thread(self._connect)
            except (OSError, ValueError) as e:
                if self._stopping:
                    return
                self.on_fail(str(e) or type(e).__name__)
            else:
                misc = asyncio.get_running_loop().create_task(self._misc())
                try:
                    await self._closed.wait()
                finally:
                    misc.cancel()
                if self._connected_once:
                    delay = self.min_retry_s
            if self._stopping:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_s)

    def _connect(self) -> None:
        # Worker thread: paho connects (and shakes hands) blocking, then queues CONNECT.
        if self._stopping:
            return
        self.client.reconnect()

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            self.client.loop_misc()

    # -- paho's socket callbacks (the loop thread, or the worker thread while connecting) ----

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to serve
                loop.call_soon_threadsafe(fn, *args)

    def _on_open(self, _c: mqtt.Client, _u: Any, sock: mqtt.SocketLike) -> None:
        self._on_loop(self._watch, sock)

    def _on_close(self, _c: mqtt.Client, _u: Any, sock: mqtt.SocketLike) -> None:
        self._on_loop(self._unwatch, sock)

    def _on_want_write(self, _c: mqtt.Client, _u: Any, sock: mqtt.SocketLike) -> None:
        self._on_loop(self._want_write, sock)

    def _on_no_write(self, _c: mqtt.Client, _u: Any, sock: mqtt.SocketLike) -> None:
        self._on_loop(self._no_write, sock)

    # -- the loop thread ----------------------------------------------------------------------

    def _watch(self, sock: socket.socket) -> None:
        assert self._loop is not None
        if self._stopping or sock.fileno() < 0:
            return
        self._sock = sock
        self._loop.add_reader(sock, self._readable)

    def _unwatch(self, sock: socket.socket) -> None:
        if self._sock is sock:
            self._forget()
        if self._closed is not None:
            self._closed.set()

    def _forget(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)

    def _want_write(self, sock: socket.socket) -> None:
        if self._sock is sock and self._loop is not None:
            self._loop.add_writer(sock, self._writable)

    def _no_write(self, sock: socket.socket) -> None:
        if self._sock is sock and self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)

    def _readable(self) -> None:
        client = self.client
        end = time.perf_counter() + READ_BUDGET_S
        while True:
            sock = self._sock
            if sock is None:
                return
            if client.loop_read() != mqtt.MQTT_ERR_SUCCESS or not _pending(sock):
                return
            if time.perf_counter() >= end:
                return

    def _writable(self) -> None:
        self.client.loop_write()


def _pending(sock: Any) -> bool:
    """Whether the socket has bytes to read right now. For TLS only the decrypted bytes it
    holds count (it cannot peek); the selector reports the rest."""
    if isinstance(sock, ssl.SSLSocket):
        return bool(sock.pending())
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except (OSError, ValueError):
        return True  # let loop_read meet the error and report it
