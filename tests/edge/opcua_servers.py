"""OPC UA test servers with the options the hardened source needs, and a link that can fail.

* `server_pki`: a server certificate and key made for the test (what a plant's PLC would have).
* `build`: an asyncua server in ``urn:cellwatch:test`` with optional security endpoints,
  users, history, a large address space (``Big/G000/V00000`` ...), and a published
  MaxMonitoredItemsPerCall that the server also enforces, as strict servers do.
* `Link`: a TCP forwarder between source and server that can be cut (connections dropped and
  new ones refused) and restored, as a network outage does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.subscription_service import SubscriptionService
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.edge.opcua_server import NS

SERVER_URI = "urn:cellwatch:test:server"
ALL_SECURE = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]
#: Variables per object in the big address space (asyncua adds children in O(n) each).
GROUP = 100


def server_pki(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed server certificate (DER) and key (PEM) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        f"cellwatch test {name}",
        {},
        [
            x509.UniformResourceIdentifier(SERVER_URI),
            x509.DNSName("localhost"),
            x509.DNSName(socket.gethostname()),
        ],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


class Users:
    """A user manager that knows one user and counts refusals."""

    def __init__(self, username: str, password: str) -> None:
        self.username, self.password = username, password
        self.refused = 0

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username == self.username and password == self.password:
            return User(role=UserRole.User)
        self.refused += 1
        return None


@dataclass
class UaServer:
    """A built server: ``async with`` it to listen; ``nodes`` by short name."""

    server: Server
    url: str
    idx: int
    nodes: dict[str, Node] = field(default_factory=dict)
    big: list[str] = field(default_factory=list)
    monitor_calls: list[int] = field(default_factory=list)
    item_limit: int = 0

    async def __aenter__(self) -> Self:
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()

    async def write(
        self, name: str, value: float, ts: float | None = None, status: int = ua.StatusCodes.Good
    ) -> None:
        """Write a Double with a source timestamp (epoch s) and status; the server stamps
        its own server timestamp."""
        dv = ua.DataValue(
            ua.Variant(value, ua.VariantType.Double),
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=None if ts is None else datetime.fromtimestamp(ts, UTC),
        )
        await self.nodes[name].write_value(dv)

    async def silence_subscriptions(self) -> None:
        """Stop the publishing of every subscription while sessions stay up (a server whose
        subscription engine hangs): no data and no keepalives from now on."""
        for sub in list(self.server.iserver.subscription_service.subscriptions.values()):
            if sub._task is not None:
                sub._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sub._task
                sub._task = None

    async def publish_item_limit(self, n: int) -> None:
        """Publish MaxMonitoredItemsPerCall (0: the server states no limit)."""
        await self.server.write_attribute_value(
            ua.NodeId(
                ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
            ),
            ua.DataValue(ua.Variant(n, ua.VariantType.UInt32)),
        )

    def subscription_items(self) -> list[Any]:
        """Server-side monitored items of all subscriptions (for checking what was asked)."""
        out: list[Any] = []
        for sub in self.server.iserver.subscription_service.subscriptions.values():
            out.extend(sub.monitored_item_srv._monitored_items.values())
        return out


async def build(
    port: int,
    *,
    policies: list[ua.SecurityPolicyType] | None = None,
    pki: tuple[Path, Path] | None = None,
    users: Users | None = None,
    history: tuple[str, ...] = (),
    big: int = 0,
    max_items_per_call: int | None = None,
) -> UaServer:
    """A test server for ``port``: Lane01, Lane02 and WebSpeed (Doubles) under Line1/Coater,
    ``big`` more variables, history kept for the nodes named in ``history``, and the other
    options named (see the module docstring)."""
    server = Server(user_manager=users)
    await server.init()
    url = f"opc.tcp://127.0.0.1:{port}/test"
    server.set_endpoint(url)
    if policies is not None:
        assert pki is not None
        await server.set_application_uri(SERVER_URI)
        server.set_security_policy(policies)
        await server.load_certificate(str(pki[0]))
        await server.load_private_key(str(pki[1]))
    if users is not None:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    idx = await server.register_namespace(NS)
    t = UaServer(server, url, idx)
    line = await server.nodes.objects.add_object(idx, "Line1")
    coater = await line.add_object(idx, "Coater")
    for lane in ("Lane01", "Lane02"):
        obj = await coater.add_object(idx, lane)
        t.nodes[lane] = await obj.add_variable(idx, "ArealWeight", 20.0, ua.VariantType.Double)
    t.nodes["WebSpeed"] = await coater.add_variable(
        ua.NodeId("Line1.Coater.WebSpeed", idx), "WebSpeed", 60.0, ua.VariantType.Double
    )
    if big:
        root = await server.nodes.objects.add_object(idx, "Big")
        group: Node | None = None
        for i in range(big):
            if i % GROUP == 0:
                group = await root.add_object(idx, f"G{i // GROUP:03d}")
            assert group is not None
            await group.add_variable(
                ua.NodeId(f"Big.{i:05d}", idx),
                ua.QualifiedName(f"V{i:05d}", idx),
                float(i),
                ua.VariantType.Double,
            )
            t.big.append(f"Big/G{i // GROUP:03d}/V{i:05d}")
    for name in history:
        await server.historize_node_data_change(t.nodes[name], period=timedelta(hours=1))
    if max_items_per_call is not None:
        await t.publish_item_limit(max_items_per_call)
        t.item_limit = max_items_per_call
        _enforce_item_limit(t)
    return t


def _enforce_item_limit(t: UaServer) -> None:
    """Make the server refuse a CreateMonitoredItems call above ``t.item_limit`` items, as the
    OPC UA specification allows and strict servers do (asyncua's own server does not)."""
    service: SubscriptionService = t.server.iserver.subscription_service
    create = service.create_monitored_items

    async def checked(params: ua.CreateMonitoredItemsParameters) -> Any:
        t.monitor_calls.append(len(params.ItemsToCreate))
        if t.item_limit and len(params.ItemsToCreate) > t.item_limit:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)
        return await create(params)

    service.create_monitored_items = checked  # type: ignore[method-assign]


class Link:
    """A TCP forwarder on its own port to ``target_port``; `cut` drops every connection and
    refuses new ones until `restore`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.down = False
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        self.down = True
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.down = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(dst)
            dst.transport.abort()
