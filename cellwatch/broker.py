"""Embedded MQTT broker for the demo and small sites, so nothing else needs installing.

amqtt is a pure-Python asyncio broker. It carries a few hundred QoS 1 messages per second on a
small gateway-class machine, which is why cellwatch batches readings into one envelope per station
per window. Sites with real traffic run Mosquitto or a broker cluster and pass ``--broker``.
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType

from amqtt.broker import Broker

__all__ = ["EmbeddedBroker", "PortInUseError", "check_port_free"]


class PortInUseError(OSError):
    """A port cellwatch was told to listen on is taken; the message is one line."""


def check_port_free(host: str, port: int, what: str) -> int:
    """Bind-test ``host:port``; returns the port (a free one when ``port`` is 0).

    Raises `PortInUseError` naming the port and what wanted it, so the CLI can print one line.
    """
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortInUseError(
                f"cannot listen on {host}:{port} for the {what}: {e.strerror or e}"
            ) from None
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """An amqtt broker on ``host:port`` with anonymous access, as an async context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = check_port_free(host, port, "MQTT broker")
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def __aenter__(self) -> EmbeddedBroker:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._broker = Broker(config)
        try:
            await self._broker.start()
        except Exception as e:
            raise PortInUseError(
                f"cannot start the MQTT broker on {self.host}:{self.port}: {e}"
            ) from None
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
