"""Run the examples in the edge modules' docstrings (pytest collects doctests in models/ only)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "edge.framer",
        "edge.payload",
        "edge.mqtt_source",
        "edge.mqtt_session",
        "edge.sparkplug_source",
    ],
)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0
