"""The plant file's server section reaches the ingest's subscription."""

from __future__ import annotations

import pytest

from models.plant import PlantConfig
from server.app import CentralServer
from tests.edge.plants import plant


def with_server(**server: object) -> dict:
    body = plant().model_dump(mode="json")
    body["server"] = {**body["server"], **server}
    return body


def test_share_group_needs_mqtt5_and_names_the_key() -> None:
    with pytest.raises(ValueError, match="share_group") as e:
        PlantConfig.model_validate(with_server(share_group="cw"))
    assert "mqtt5" in str(e.value)


def test_share_group_must_be_a_topic_level() -> None:
    with pytest.raises(ValueError, match="share_group"):
        PlantConfig.model_validate(with_server(share_group="a/b", mqtt5=True))


def test_the_server_section_sets_the_shared_subscription() -> None:
    cfg = PlantConfig.model_validate(with_server(share_group="cw", mqtt5=True))
    server = CentralServer(cfg)
    assert (server._share_group, server._mqtt5) == ("cw", True)
    assert CentralServer(plant())._share_group is None
