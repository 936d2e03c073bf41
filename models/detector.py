"""The `Detector` contract every streaming chart in cellwatch follows, and its error types.

A detector is fitted once on an in-control baseline (Phase I, ``fit``), then watches new data in
chunks shaped ``(time, tags)`` (Phase II, ``update``), carrying its state between chunks so that
chunking never changes results. Learned attributes end in ``_``. Parameters are validated when
the detector is built, with messages of one shape: "The 'lam' parameter of Ewma must be a float
in (0, 1]. Got 1.5 instead."
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from models.params import ParameterError

__all__ = ["BaselineError", "Detector", "NotFittedError", "ParameterError", "as_chunk"]

FloatArray = npt.NDArray[np.float64]


class NotFittedError(RuntimeError):
    """``update`` was called before ``fit``."""


class BaselineError(ValueError):
    """The Phase I baseline is too small or degenerate for some tag."""


@runtime_checkable
class Detector(Protocol):
    """Phase I ``fit`` on a baseline, Phase II ``update`` on chunks, ``reset`` to start over."""

    def fit(self, baseline: npt.ArrayLike) -> Detector: ...

    def update(self, chunk: npt.ArrayLike) -> Any: ...

    def reset(self) -> None: ...


def as_chunk(x: npt.ArrayLike, name: str, n_tags: int | None = None) -> FloatArray:
    """Coerce input to a float64 ``(time, tags)`` array; a 1-D input is one tag."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be shaped (time, tags), got an array with shape {a.shape}")
    if n_tags is not None and a.shape[1] != n_tags:
        raise ValueError(f"{name} must have {n_tags} tag columns as in fit, got {a.shape[1]}")
    return a
