"""The edge agent that runs on a line's gateway: collect, frame, detect, publish.

Sources (`edge.opcua_source`, `edge.mqtt_source`) turn equipment data into `Reading`s, the
`edge.framer` groups them per parameter into numpy chunks once per window, `edge.monitor` runs
the EWMA charts of `models.ewma` on those chunks, and `edge.publisher` sends everything to the
broker with QoS 1. `edge.agent.EdgeAgent` wires them together from a `PlantConfig`, so nothing
about a particular plant is written in this package. The gateway needs numpy, asyncua and
paho-mqtt only; edge never imports server.
"""

__all__: list[str] = []
