"""A station model on disk: ``NAME.npz`` with the arrays beside ``NAME.json`` with what they mean.

Models are fitted centrally and shipped to gateways, so the file format is the contract between
the two and must outlive any one library version. Arrays go into an uncompressed ``.npz``
(loaded with ``allow_pickle=False``: a model file can never run code); everything a person
reviewing or auditing a model needs (variables, units, scaling method, components, limits,
training window, the library versions that fitted it) goes into the JSON, readable without
Python. The JSON records the SHA-256 of the ``.npz``, so a pair that does not belong together
is refused rather than scored. Reading needs numpy and the standard library only.

``FORMAT_VERSION`` changes when a reader of an older version could misread a newer file; a reader
refuses versions it does not know.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from models.isoforest import IsoForest
from models.mvmodel import MvModel

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ArtifactError",
    "artifact_paths",
    "load_model",
    "save_model",
]

FORMAT = "cellwatch-mv"
FORMAT_VERSION = 1

_ARRAYS = ("mean", "scale", "loadings", "eigenvalues", "precision", "t2_center", "spe_center")
_FOREST = ("left", "right", "feature", "threshold", "leaf_value")


class ArtifactError(ValueError):
    """A model artifact is missing, damaged, mismatched or of an unknown format version."""


def artifact_paths(path: str | Path) -> tuple[Path, Path]:
    """The ``.npz`` and ``.json`` paths of an artifact named by either file or the bare stem."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


def _number(x: float) -> float | None:
    """JSON has no NaN: an absent limit is written as null."""
    return None if math.isnan(x) else float(x)


def save_model(model: MvModel, path: str | Path) -> tuple[Path, Path]:
    """Write ``model`` as ``PATH.npz`` + ``PATH.json``; returns both paths."""
    npz_path, json_path = artifact_paths(path)
    arrays: dict[str, np.ndarray[Any, Any]] = {name: getattr(model, name) for name in _ARRAYS}
    forest = model.iforest
    if forest is not None:
        arrays.update({f"iforest_{name}": getattr(forest, name) for name in _FOREST})
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    data = buf.getvalue()
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "variables": list(model.variables),
        "units": list(model.units),
        "lags": model.lags,
        "components": model.components,
        "scaling": {
            "method": str(model.info.get("scaling", "x_scaled = (x - mean) / scale")),
            "mean": [float(v) for v in model.mean[: len(model.variables)]],
            "scale": [float(v) for v in model.scale[: len(model.variables)]],
        },
        "limits": {
            "t2": model.t2_limit,
            "spe": _number(model.spe_limit),
            "iso": _number(model.iso_limit),
        },
        "smoothing": {"t2_lam": model.t2_lam, "spe_lam": model.spe_lam},
        "iforest": None
        if forest is None
        else {
            "trees": int(forest.left.shape[0]),
            "max_samples": forest.max_samples,
            "depth": forest.depth,
        },
        "npz_sha256": hashlib.sha256(data).hexdigest(),
        "info": dict(model.info),
    }
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    npz_path.write_bytes(data)
    json_path.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return npz_path, json_path


def load_model(path: str | Path) -> MvModel:
    """Read an artifact written by `save_model`; raises `ArtifactError` on any mismatch."""
    npz_path, json_path = artifact_paths(path)
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
        data = npz_path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read model artifact: {e}") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{json_path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{json_path} is not a {FORMAT} artifact")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{json_path} has format version {meta.get('format_version')!r}; "
            f"this reader knows {FORMAT_VERSION}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta.get("npz_sha256"):
        raise ArtifactError(f"{npz_path} does not match {json_path} (SHA-256 differs)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {name: np.asarray(z[name]) for name in z.files}
        limits = meta["limits"]
        smoothing = meta["smoothing"]
        fmeta = meta["iforest"]
        forest = None
        if fmeta is not None:
            forest = IsoForest(
                left=arrays["iforest_left"].astype(np.int32),
                right=arrays["iforest_right"].astype(np.int32),
                feature=arrays["iforest_feature"].astype(np.int32),
                threshold=arrays["iforest_threshold"].astype(np.float64),
                leaf_value=arrays["iforest_leaf_value"].astype(np.float64),
                max_samples=int(fmeta["max_samples"]),
                depth=int(fmeta["depth"]),
            )
        return MvModel(
            kind=str(meta["kind"]),
            variables=tuple(str(v) for v in meta["variables"]),
            units=tuple(str(u) for u in meta["units"]),
            lags=int(meta["lags"]),
            **{name: arrays[name].astype(np.float64) for name in _ARRAYS},
            t2_limit=float(limits["t2"]),
            spe_limit=math.nan if limits["spe"] is None else float(limits["spe"]),
            t2_lam=float(smoothing["t2_lam"]),
            spe_lam=float(smoothing["spe_lam"]),
            iforest=forest,
            iso_limit=math.nan if limits["iso"] is None else float(limits["iso"]),
            info=dict(meta.get("info") or {}),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{json_path}: malformed artifact: {e}") from None
