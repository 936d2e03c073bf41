"""Finding the configured nodes on a server and subscribing them, in batches the server allows.

Large address spaces are where collectors break: one CreateMonitoredItems call with thousands
of items runs into the server's per-call limit or its message size (``BadTooManyOperations``,
``BadTcpMessageTooLarge``), and one TranslateBrowsePaths call per node takes minutes at 10k
nodes. So every service call here carries at most a batch of nodes: the smaller of the
configured ``batch_size`` and the server's OperationLimits (read from
``Server/ServerCapabilities/OperationLimits`` at every connect). A limit the server does not
publish, or publishes as 0 ("no limit"), counts as `DEFAULT_PER_CALL`, because message sizes
still bound a call. A batch the server refuses as too large is split in halves and retried.

Addresses are relative to the source's namespace URI, resolved to an index at every connect
(a server may renumber its namespaces when it restarts); a node id may also name its own
namespace with ``nsu=URI;...`` or ``ns=N;...``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from asyncua import Client, ua

from models import plant

__all__ = [
    "OperationLimits",
    "Resolved",
    "batches",
    "create_items",
    "describe",
    "item_request",
    "read_limits",
    "resolve",
]

log = logging.getLogger("cellwatch.edge.opcua")

#: Nodes per call when the server does not say.
DEFAULT_PER_CALL = 1000

#: Refusals that mean "this call was too big", after which the batch is halved.
TOO_BIG = {
    ua.StatusCodes.BadTooManyOperations,
    ua.StatusCodes.BadRequestTooLarge,
    ua.StatusCodes.BadResponseTooLarge,
    ua.StatusCodes.BadEncodingLimitsExceeded,
    ua.StatusCodes.BadTcpMessageTooLarge,
}

_LIMIT_NODES = {
    "translate": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds,  # noqa: E501
    "monitored_items": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,  # noqa: E501
    "history_read": ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerHistoryReadData,  # noqa: E501
}

T = TypeVar("T")


def _numeric(identifier: int) -> ua.NodeId:
    """A namespace-0 NodeId from a plain int such as ``ua.ObjectIds.ObjectsFolder``.

    asyncua annotates ``NodeId.Identifier`` with its wire marker class ``ua.Int32`` but takes
    plain ints (as it does itself); the cast only tells mypy so.
    """
    return ua.NodeId(cast(ua.Int32, identifier))


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """Nodes per call for the services the source uses (already capped by ``batch_size``).

    ``published`` holds what the server itself said (None where it said nothing usable).
    """

    translate: int
    monitored_items: int
    history_read: int
    published: dict[str, int | None]


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items.

    Examples:
        >>> [list(b) for b in batches([1, 2, 3, 4, 5], 2)]
        [[1, 2], [3, 4], [5]]
    """
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def read_limits(client: Client, cap: int) -> OperationLimits:
    """The server's per-call limits, each capped at ``cap``; unknown ones are the default."""
    params = ua.ReadParameters()
    for nid in _LIMIT_NODES.values():
        rv = ua.ReadValueId()
        rv.NodeId = _numeric(nid)
        rv.AttributeId = ua.AttributeIds.Value
        params.NodesToRead.append(rv)
    published: dict[str, int | None] = dict.fromkeys(_LIMIT_NODES)
    try:
        results = await client.uaclient.read(params)
    except ua.UaStatusCodeError as e:  # a server without the nodes may refuse the whole read
        log.info("server %s publishes no OperationLimits (%s)", client.server_url.geturl(), e)
        results = []
    for name, dv in zip(_LIMIT_NODES, results, strict=False):
        # A DataValue without a StatusCode is Good (OPC UA Part 4, 7.11); asyncua decodes one
        # as Good already, but its field admits None.
        good = dv.StatusCode is None or dv.StatusCode.is_good()
        value = dv.Value.Value if good and dv.Value is not None else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            published[name] = value

    def per_call(name: str) -> int:
        n = published[name]
        return min(cap, n if n is not None else DEFAULT_PER_CALL)

    return OperationLimits(
        per_call("translate"), per_call("monitored_items"), per_call("history_read"), published
    )


@dataclass(frozen=True, slots=True)
class Resolved:
    """The outcome of resolving the configured nodes: node ids by handle, and failures."""

    node_ids: dict[int, ua.NodeId]
    failed: list[tuple[int, str]]
    calls: int


def describe(n: plant.OpcUaNode) -> str:
    """How a node is named in logs: its configured address."""
    return f"node_id {n.node_id}" if n.node_id is not None else f"browse_path {n.browse_path}"


def _plain(nid: ua.NodeId) -> ua.NodeId:
    """A NodeId from an ExpandedNodeId (as TranslateBrowsePaths returns), for requests."""
    return ua.NodeId(nid.Identifier, nid.NamespaceIndex, nid.NodeIdType)


def _node_id(text: str, default_ns: int, namespaces: list[str]) -> ua.NodeId:
    if text.startswith("nsu="):
        uri, sep, rest = text[4:].partition(";")
        if not sep:
            raise ValueError(f"{text!r} must be nsu=URI;IDENTIFIER")
        if uri not in namespaces:
            raise LookupError(f"namespace {uri!r} is not on the server")
        return ua.NodeId.from_string(f"ns={namespaces.index(uri)};{rest}")
    if text.startswith("ns="):
        return ua.NodeId.from_string(text)
    return ua.NodeId.from_string(f"ns={default_ns};{text}" if default_ns else text)


def _browse_path(path: str, ns: int) -> ua.BrowsePath:
    """A browse path from the Objects folder, one hierarchical step per ``/``-separated name."""
    bp = ua.BrowsePath()
    bp.StartingNode = _numeric(ua.ObjectIds.ObjectsFolder)
    for part in (p for p in path.split("/") if p):
        el = ua.RelativePathElement()
        el.ReferenceTypeId = _numeric(ua.ObjectIds.HierarchicalReferences)
        # asyncua annotates these flags with its marker class ua.Boolean, which cannot
        # subclass bool; its encoder takes plain bools.
        el.IsInverse = cast(ua.Boolean, False)
        el.IncludeSubtypes = cast(ua.Boolean, True)
        el.TargetName = ua.QualifiedName(part, ns)
        bp.RelativePath.Elements.append(el)
    return bp


async def resolve(client: Client, cfg: plant.OpcUaSource, per_call: int) -> Resolved:
    """Node ids of the configured nodes, keyed by handle (config index + 1).

    Browse paths go through TranslateBrowsePathsToNodeIds in batches; node ids are parsed
    (whether they exist shows when they are monitored). A node that cannot be resolved is
    reported in ``failed`` with the reason and does not stop the others.
    """
    namespaces: list[str] = await client.get_namespace_array()
    idx = 0
    if cfg.namespace_uri is not None:
        if cfg.namespace_uri not in namespaces:
            raise LookupError(f"namespace {cfg.namespace_uri!r} is not on the server")
        idx = namespaces.index(cfg.namespace_uri)
    out: dict[int, ua.NodeId] = {}
    failed: list[tuple[int, str]] = []
    paths: list[tuple[int, str]] = []
    for i, n in enumerate(cfg.nodes):
        handle = i + 1
        if n.node_id is not None:
            try:
                out[handle] = _node_id(n.node_id, idx, namespaces)
            except Exception as e:  # noqa: BLE001 - a bad id must not stop the other nodes
                failed.append((handle, f"{type(e).__name__}: {e}"))
            continue
        assert n.browse_path is not None
        paths.append((handle, n.browse_path))
    calls = 0
    # The request objects are built one batch at a time: for 10,000 nodes, all at once they
    # would hold tens of megabytes at the gateway's peak.
    for batch in batches(paths, per_call):
        request = [_browse_path(path, idx) for _, path in batch]
        results = await client.uaclient.translate_browsepaths_to_nodeids(request)
        calls += 1
        for (handle, _), res in zip(batch, results, strict=True):
            if res.StatusCode.is_good() and res.Targets:
                out[handle] = _plain(res.Targets[0].TargetId)
            else:
                failed.append((handle, f"not found ({res.StatusCode.name})"))
        del request, results
    return Resolved(out, failed, calls)


def item_request(
    node_id: ua.NodeId, handle: int, node: plant.OpcUaNode, cfg: plant.OpcUaSource
) -> ua.MonitoredItemCreateRequest:
    """A Reporting monitored item for ``node``, with its (or the source's) sampling interval,
    queue size and absolute deadband.

    Without a deadband the trigger is StatusValueTimestamp, so a sample repeating the previous
    value still arrives (equal consecutive measurements are data, not noise); with one it is
    StatusValue, because a new timestamp would otherwise defeat the deadband.
    """
    deadband = node.deadband if node.deadband is not None else cfg.deadband
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = (
        node.sampling_interval_ms
        if node.sampling_interval_ms is not None
        else cfg.sampling_interval_ms
    )
    params.QueueSize = node.queue_size if node.queue_size is not None else cfg.queue_size
    params.DiscardOldest = True
    if deadband > 0:
        params.Filter = ua.DataChangeFilter(
            Trigger=ua.DataChangeTrigger.StatusValue,
            DeadbandType=ua.DeadbandType.Absolute,
            DeadbandValue=deadband,
        )
    else:
        params.Filter = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
    req = ua.MonitoredItemCreateRequest()
    req.ItemToMonitor = ua.ReadValueId(NodeId=node_id, AttributeId=ua.AttributeIds.Value)
    req.MonitoringMode = ua.MonitoringMode.Reporting
    req.RequestedParameters = params
    return req


def _too_big(e: ua.UaStatusCodeError) -> bool:
    return getattr(e, "code", None) in TOO_BIG


async def create_items(
    sub: Any, requests: Sequence[ua.MonitoredItemCreateRequest], per_call: int
) -> tuple[dict[int, int], dict[int, str], int]:
    """Create ``requests`` on ``sub`` at most ``per_call`` per call.

    Returns the server handles by client handle, the refusals (client handle -> status name)
    and the number of calls made. A call refused as too large is retried in halves.
    """
    ok: dict[int, int] = {}
    refused: dict[int, str] = {}
    calls = 0
    pending = [list(b) for b in batches(requests, per_call)]
    while pending:
        batch = pending.pop(0)
        calls += 1
        try:
            results = await sub.create_monitored_items(batch)
        except ua.UaStatusCodeError as e:
            if _too_big(e) and len(batch) > 1:
                half = len(batch) // 2
                log.warning(
                    "server refused %d monitored items in one call (%s); retrying by %d",
                    len(batch),
                    type(e).__name__,
                    half,
                )
                pending[:0] = [batch[:half], batch[half:]]
                continue
            raise
        for req, res in zip(batch, results, strict=True):
            handle = req.RequestedParameters.ClientHandle
            if isinstance(res, ua.StatusCode):
                refused[handle] = res.name
            else:
                ok[handle] = res
    return ok, refused, calls
