"""The pure core shared by edge and server: messages, wire format, plant schema, detectors.

Nothing here does I/O or uses asyncio, so the same code runs on a gateway, on the server and in
tests, and a gateway needs numpy (not scikit-learn) to run it.
"""

__all__: list[str] = []
