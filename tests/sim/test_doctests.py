"""Run the examples in the sim modules' docstrings (pytest collects doctests in models/ only)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sim

MODULES = sorted(m.name for m in pkgutil.iter_modules(sim.__path__, "sim."))
#: Modules whose docstrings must keep their examples (a lost example is a lost check).
WITH_EXAMPLES = {
    "sim.calender",
    "sim.coating",
    "sim.energy",
    "sim.fault",
    "sim.gauge",
    "sim.genealogy",
    "sim.grading",
    "sim.loading",
    "sim.mqtt_publisher",
    "sim.scenario",
    "sim.sparkplug",
    "sim.web",
}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
    if name in WITH_EXAMPLES:
        assert result.attempted > 0
