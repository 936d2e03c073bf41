"""Runs the examples in the server modules' docstrings."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "alerts",
    "api",
    "app",
    "coerce",
    "dedup",
    "digits",
    "embedded",
    "frame",
    "influx1",
    "influx2",
    "ingest",
    "lineprotocol",
    "reports",
    "schema",
    "sink",
    "store",
    "writer",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"server.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
