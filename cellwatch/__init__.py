"""cellwatch command line: the demo, the simulator, the edge agent, the server, config checks."""

__all__: list[str] = []
