"""``run_until_signal``: the body's result comes back (``cellwatch demo`` exits with it)."""

from __future__ import annotations

import asyncio
import signal

from cellwatch.cli import run_until_signal


async def test_the_body_result_is_returned_and_the_handlers_removed() -> None:
    async def body(stop: asyncio.Event) -> int:
        assert not stop.is_set()
        return 3

    assert await run_until_signal(body) == 3
    assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
