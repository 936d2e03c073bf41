"""Reading a gap back from an OPC UA server's history (HistoryRead, raw values).

After a reconnect the samples a device produced while the link was down still sit in the
server's history, if it keeps one; no other collector fetches them, so an outage becomes a hole
in every chart. One call reads a batch of nodes over one time range (the OPC UA service takes
one range per call, so a batch uses the earliest start of its nodes; the caller drops what it
already has). Continuation points are followed until the server has sent everything, in
responses of at most `VALUES_PER_RESPONSE` values.

A node the server keeps no history for answers with a bad status (or, on some servers, with no
values); that is reported per node and is not an error. A server without the service raises
`HistoryUnsupported`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from asyncua import Client, ua

__all__ = ["HistoryBatch", "HistoryUnsupported", "read_raw"]

#: Values asked for per response (spread over the nodes of a call), to bound message sizes.
VALUES_PER_RESPONSE = 100_000

_UNSUPPORTED = {
    ua.StatusCodes.BadServiceUnsupported,
    ua.StatusCodes.BadHistoryOperationUnsupported,
}


class HistoryUnsupported(Exception):
    """The server does not offer HistoryRead at all."""


@dataclass(slots=True)
class HistoryBatch:
    """What one `read_raw` got: values by key, and the keys the server refused, with why."""

    values: dict[int, list[ua.DataValue]] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    calls: int = 0


async def read_raw(
    client: Client,
    nodes: Sequence[tuple[int, ua.NodeId]],
    start: datetime,
    end: datetime,
) -> HistoryBatch:
    """Raw history of ``nodes`` (``(key, node id)`` pairs) from ``start`` to ``end``."""
    out = HistoryBatch()
    if not nodes:
        return out
    details = ua.ReadRawModifiedDetails()
    details.IsReadModified = False
    details.StartTime = start
    details.EndTime = end
    details.NumValuesPerNode = max(1, VALUES_PER_RESPONSE // len(nodes))
    details.ReturnBounds = False
    todo: list[tuple[int, ua.NodeId, bytes | None]] = [(k, nid, None) for k, nid in nodes]
    seen_points: dict[int, bytes] = {}
    while todo:
        params = ua.HistoryReadParameters()
        params.HistoryReadDetails = details
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.ReleaseContinuationPoints = False
        for _, nid, point in todo:
            rv = ua.HistoryReadValueId()
            rv.NodeId = nid
            rv.ContinuationPoint = point
            params.NodesToRead.append(rv)
        try:
            results = await client.uaclient.history_read(params)
        except ua.UaStatusCodeError as e:
            if getattr(e, "code", None) in _UNSUPPORTED:
                raise HistoryUnsupported(str(e)) from None
            raise
        out.calls += 1
        more: list[tuple[int, ua.NodeId, bytes | None]] = []
        for (key, nid, _), res in zip(todo, results, strict=True):
            if not res.StatusCode.is_good():
                out.refused[key] = res.StatusCode.name
                continue
            data = res.HistoryData
            values = getattr(data, "DataValues", None) or []
            out.values.setdefault(key, []).extend(values)
            point = res.ContinuationPoint
            # A server repeating its continuation point makes no progress: stop there.
            if point and seen_points.get(key) != point:
                seen_points[key] = point
                more.append((key, nid, point))
        todo = more
    return out
