"""Handing calls from paho-mqtt's network thread to the agent's asyncio loop.

paho runs its callbacks on its own thread; all edge state (queues, counters, sequence numbers)
lives on the asyncio loop and is touched only there, so every callback is forwarded with
``call_soon_threadsafe``. During shutdown the loop may already be closed when a late callback
fires; such calls are dropped on purpose, since nothing is left to receive them.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["call_in_loop"]


def call_in_loop(loop: asyncio.AbstractEventLoop | None, fn: Any, *args: Any) -> None:
    """Schedule ``fn(*args)`` on ``loop`` from another thread; a no-op once the loop is closed."""
    if loop is None or loop.is_closed():
        return
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass  # the loop closed between the check and the call: we are shutting down
