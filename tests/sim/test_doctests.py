"""Run the examples in the sim modules' docstrings (pytest collects doctests in models/ only)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["sim.fault", "sim.mqtt_publisher", "sim.scenario"])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0
