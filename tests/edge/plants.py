"""Small plant configurations for the edge tests, built from plain dicts."""

from __future__ import annotations

from typing import Any

from models.plant import PlantConfig


def plant(
    *,
    detector: dict[str, Any] | None = None,
    params: tuple[str, ...] = ("weight",),
    opcua: list[dict[str, Any]] | None = None,
    mqtt: list[dict[str, Any]] | None = None,
    edge: dict[str, Any] | None = None,
    broker: str = "mqtt://127.0.0.1:1883",
    extra_station: bool = False,
) -> PlantConfig:
    """Line ``l1`` (area ``a1``) with station ``coater`` measuring ``params``.

    The first parameter carries ``detector``; with ``extra_station`` a station ``formation``
    with ``voltage`` (no detector) is added.
    """
    ps: list[dict[str, Any]] = [{"id": p} for p in params]
    if detector is not None:
        ps[0]["detector"] = detector
    stations: list[dict[str, Any]] = [{"id": "coater", "params": ps}]
    if extra_station:
        stations.append({"id": "formation", "params": [{"id": "voltage"}]})
    return PlantConfig.model_validate({
        "site": {"id": "s1"},
        "edge": edge or {},
        "broker": {"url": broker},
        "lines": [{"id": "l1", "area": "a1", "stations": stations}],
        "sources": {"opcua": opcua or [], "mqtt": mqtt or []},
    })
