"""Plant simulator: a coating line served over OPC UA and formation cabinets over MQTT.

It gives every other part of cellwatch something real to talk to (the demo, integration tests,
detector evaluation) without plant hardware: seeded numeric models of the signals, the exact
address space and topics of ``config/plant.example.yaml``, and scripted faults, from a scenario
file or given directly, whose ground truth is recorded so detections can be scored.
It imports only ``models`` from the project.
"""

from sim.error import SimError
from sim.fault import CoatingTarget, Fault, FaultSpec, FormationTarget
from sim.scenario import Scenario, parse_scenario
from sim.simulator import Simulator

__all__ = [
    "CoatingTarget",
    "Fault",
    "FaultSpec",
    "FormationTarget",
    "Scenario",
    "SimError",
    "Simulator",
    "parse_scenario",
]
