"""Worked examples from the literature that span detectors, checked to their published digits.

Per-detector published values live in each detector's test file (CUSUM Table 9.1 in
test_cusum.py, qcc's piston rings in test_subgroup.py, the ARL tables in test_arl.py); this file
holds the EWMA worked example, whose reference numbers come from Montgomery's Table 9.1 data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.ewma import Ewma

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "spc_reference.json"


def _reference(name: str) -> dict[str, Any]:
    if not REFERENCE.exists():
        msg = f"reference data missing: {REFERENCE}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    entry: dict[str, Any] = json.loads(REFERENCE.read_text())[name]
    return entry


def test_montgomery_ewma_example_exact_limits() -> None:
    """Montgomery's EWMA on the Table 9.1 data: lam 0.1, L 2.7, mu0 10, sigma 1, exact limits."""
    ref = _reference("montgomery_ewma_example_table_9_1")
    p, exp = ref["params"], ref["expected"]
    det = Ewma(lam=p["lambda"], L=p["L"], limits="exact").fit_known([p["mu0"]], [p["sigma"]])
    res = det.update(np.array(ref["data"])[:, None])
    # The published z carry 5-6 significant figures: compare at 5e-5 relative.
    np.testing.assert_allclose(res.statistic[:, 0], exp["z"], rtol=5e-5)
    np.testing.assert_allclose([res.lcl[0, 0], res.ucl[0, 0]], exp["limits_period1"], atol=5e-3)
    np.testing.assert_allclose([res.lcl[1, 0], res.ucl[1, 0]], exp["limits_period2"], atol=5e-5)
    periods = (np.flatnonzero(res.signal[:, 0]) + 1).tolist()
    assert periods == exp["signal_periods"]
    assert periods[0] == exp["first_signal_period_1based"]
    asym = Ewma(lam=p["lambda"], L=p["L"], limits="asymptotic").fit_known([10.0], [1.0])
    steady = asym.update(np.array(ref["data"][:1])[:, None])
    np.testing.assert_allclose([steady.lcl[0, 0], steady.ucl[0, 0]], exp["limits_steady_state"],
                               atol=5e-5)
