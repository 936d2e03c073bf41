"""Awaiting a condition in tests: poll it on the event loop with a deadline.

Used where no event exists to await (a counter reaching a value, a row showing up in a
database); the failure names what was awaited, so a timeout reads as a finding, not a hang.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

__all__ = ["eventually"]


async def eventually(
    check: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``check()`` until it is truthy and return its value; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
