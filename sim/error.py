"""The one error type the simulator raises for problems its user can fix.

A taken OPC UA port or an unusable broker URL is an operating problem, not a bug, so it is
reported as a ``SimError`` whose message is a single line naming what to change. It derives
from ``OSError`` because most causes are socket-level, so callers that already handle
``OSError`` for "port in use" keep working.
"""

from __future__ import annotations

__all__ = ["SimError"]


class SimError(OSError):
    """A configuration or environment problem that stops the simulator; one-line message."""
