"""Isolation-forest anomaly scores computed from exported tree arrays, with numpy alone.

An isolation forest is fitted on the server with scikit-learn; a gateway has no scikit-learn, so
the fitted trees travel as plain arrays (children, split feature, split threshold, and the path
length credited at each leaf) and are walked here level by level for every tree and row at
once. The score is the one of Liu, Ting & Zhou (2008) as scikit-learn computes it:
``2 ** (-mean path length / c(max_samples))``, near 1 for points isolated in few splits
(anomalies), below 0.5 for ordinary points. It is the negative of scikit-learn's
``score_samples``, so that larger means more anomalous like T2 and SPE.

Comparisons are made on values rounded to float32, as scikit-learn's trees do, so that a point on
a split threshold goes the same way on both sides.

References: Liu, Ting & Zhou (2008), "Isolation Forest", ICDM; scikit-learn
``sklearn.ensemble.IsolationForest``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.detector import FloatArray

__all__ = ["IsoForest", "average_path_length"]

IntArray = npt.NDArray[np.int32]


def average_path_length(n: npt.ArrayLike) -> FloatArray:
    """``c(n)``: mean path length of an unsuccessful search in a binary tree of ``n`` points.

    Examples:
        >>> average_path_length([1, 2, 256]).round(4).tolist()
        [0.0, 1.0, 10.2448]
    """
    a = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(a)
    big = a > 2
    out[a == 2] = 1.0
    out[big] = 2.0 * (np.log(a[big] - 1.0) + np.euler_gamma) - 2.0 * (a[big] - 1.0) / a[big]
    return out


@dataclass(frozen=True, slots=True)
class IsoForest:
    """A forest of ``trees`` isolation trees padded to ``nodes`` nodes each.

    ``left``/``right`` hold child indices (-1 at a leaf), ``feature`` the input column a node
    splits on, ``threshold`` the split value (left when ``x <= threshold``), ``leaf_value`` the
    path length credited when a row ends in that leaf (its depth plus ``c(leaf size)``), all
    shaped ``(trees, nodes)``; ``max_samples`` is the subsample size each tree was grown on and
    ``depth`` the deepest leaf, which bounds the walk.
    """

    left: IntArray
    right: IntArray
    feature: IntArray
    threshold: FloatArray
    leaf_value: FloatArray
    max_samples: int
    depth: int

    def score(self, x: npt.ArrayLike) -> FloatArray:
        """Anomaly score of each row of ``x`` (rows, features); larger is more anomalous.

        Examples:
            >>> one_split = IsoForest(
            ...     left=np.array([[1, -1, -1]], np.int32), right=np.array([[2, -1, -1]], np.int32),
            ...     feature=np.zeros((1, 3), np.int32), threshold=np.array([[0.5, 0.0, 0.0]]),
            ...     leaf_value=np.array([[0.0, 1.0, 3.0]]), max_samples=4, depth=1)
            >>> one_split.score([[0.0], [1.0]]).round(4).tolist()
            [0.6877, 0.3253]
        """
        a = np.asarray(x, dtype=np.float64)
        rows = a.shape[0]
        trees = self.left.shape[0]
        if rows == 0 or trees == 0:
            return np.full(rows, np.nan)
        # float32 rounding first, as scikit-learn's tree code does, then compared in float64.
        values = a.astype(np.float32).astype(np.float64)
        node = np.zeros((trees, rows), dtype=np.intp)
        tree = np.arange(trees)[:, None]
        row = np.arange(rows)[None, :]
        for _ in range(self.depth):
            left = self.left[tree, node]
            inner = left >= 0
            if not inner.any():
                break
            go_left = values[row, self.feature[tree, node]] <= self.threshold[tree, node]
            step = np.where(go_left, left, self.right[tree, node])
            node = np.where(inner, step, node)
        total = np.zeros(rows)
        for t in range(trees):  # tree by tree, the order scikit-learn adds them up in
            total += self.leaf_value[t, node[t]]
        c = float(average_path_length(self.max_samples))
        denominator = trees * c
        if denominator == 0.0:
            return np.ones(rows)
        out: FloatArray = np.power(2.0, -total / denominator)
        return out
