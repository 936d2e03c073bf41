"""Plant simulator: a coating line served over OPC UA and formation cabinets over MQTT.

It gives every other part of cellwatch something real to talk to (the demo, integration tests,
detector evaluation) without plant hardware: seeded numeric models of the signals, the exact
address space and topics of ``config/plant.example.yaml``, and one scripted drift whose ground
truth is recorded so detections can be scored. It imports only ``models`` from the project.
"""

from sim.error import SimError
from sim.fault import FaultSpec
from sim.simulator import Simulator

__all__ = ["FaultSpec", "SimError", "Simulator"]
