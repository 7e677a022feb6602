"""Fast scoring of a fitted featurizer, and a sliding-window featurizer for streams.

:class:`FastFeaturizer` takes a fitted :class:`~anomaly_gym.envs.features.Featurizer` and
precomputes, per detector, what scoring a row needs, so that one row is featurized in
well under a millisecond (the detectors' own ``decision_function`` path costs several
milliseconds a row, most of it per-call overhead; IForest alone is ~10 ms).  It compiles
the bank's detectors (:mod:`anomaly_gym.envs.bank`) and PyOD's own classes of the same
names (featurizers pickled before the bank).  Its features are those of
``Featurizer.transform`` for the same fitted state:

=========  ====================================================================================
detector   fast path
=========  ====================================================================================
ecod,      the fitting rows' sorted columns, shared by the two: ``np.searchsorted`` per column
copod      (the same arithmetic as the featurizer's own implementation: identical scores).
hbos       bin edges and the per-bin scores, read back from the bank's scoring function at
           compile time; one ``searchsorted`` per column (identical scores).
knn, lof   one neighbour search shared by all of them (they are fitted on the same rows):
           brute force in numpy for a few rows, scikit-learn's ``ArgKmin`` for many, the
           distances computed as the KD-tree computes them (sum of squares in column order,
           then the square root); rows with (nearly) tied neighbours are looked up in each
           detector's own fitted tree, since which tied rows are kept, and in what order, is
           the tree's choice (identical scores).  Above 15 columns scikit-learn fits no tree
           and searches by brute force with the expansion ``|x|^2 - 2 x.y + |y|^2``: there
           the exact sums agree with its distances to about 1e-13 (relative), not to the
           bit, so a row whose score ties a fitting row's (the fitting rows themselves) can
           rank on the other side of it, which moves its percentile feature by a step.
iforest    the fitted trees flattened into padded arrays and walked level by level for all
           trees at once (path lengths, leaf corrections and the sum over trees in the order
           scikit-learn uses: identical scores).  Many rows go to scikit-learn's own ``apply``.
pca        standardisation and the distance to the selected components in numpy (equal to
           SciPy's ``cdist`` up to the last bit of rounding).
cblof      nearest-centre labels and distances in numpy (the distance to a row's own centre
           summed as PyOD's kernel sums it: identical; to the large centres equal to SciPy's
           ``cdist`` up to rounding; a row exactly equidistant from two centres may take the
           other label).
gmm        scikit-learn's own weighted log-likelihoods, without its per-call input checks
           (identical, except that a matrix product of one row and of many rows may round
           differently in the last bit, as in scikit-learn itself).
others     the detector's own ``decision_function`` (correct, not fast).
=========  ====================================================================================

After the detector scores, the featurizer's own code turns them into features
(``Featurizer._transform_chunk``), so the feature definitions exist in one place only.

One row (:meth:`FastFeaturizer.transform_row`, the stream's hot path) has its own code,
because numpy's per-call overhead on arrays of one row dominated it: each compiled detector
has a ``row`` method (ECOD/COPOD tail counts and the percentile ranks as binary searches in
Python lists, the isolation forest walked over nodes laid out level by level across the
trees, neighbours preselected with one matrix-vector product within a proven rounding
margin and then measured exactly), and :class:`_RowFeatures` repeats
``_transform_chunk``'s arithmetic for one row.  The same floating-point operations on the
same values, so the features are bit-identical to the batch code's
(``tests/envs/test_stream.py::test_single_row_path_is_bit_identical_to_the_batch_code``);
:meth:`FastFeaturizer.transform_row_generic` is that batch code for one row.
``tests/envs/test_stream.py`` checks the agreement, for the default and the rich detector
banks, on continuous and on tie-heavy discrete data (tolerance ``1e-6`` on the features; in
practice they are bit-identical, except PCA and CBLOF distances, which may differ from
SciPy's ``cdist`` in the last bit, and GMM, see above).  A detector
configured off the fast paths (``hbos:n_bins=auto``, ``knn:metric=manhattan``, ``ocsvm``)
falls back to its own ``decision_function``: still correct, but slow per row.

:class:`SlidingWindowFeaturizer` keeps the last ``window`` rows of a stream in a bounded
deque, fits after ``warmup`` rows and refits every ``refit_every`` rows, so its memory does
not grow with the stream.
"""

from __future__ import annotations

import bisect
import copy
import logging
import math
import time
import warnings
from collections import deque
from typing import Callable

import numpy as np
from anomaly_gym.envs import features as _features
from anomaly_gym.envs.bank import hbos_column_scores, one_openmp_thread, paired_distances
from anomaly_gym.envs.features import Z_CLIP, Featurizer, FeaturizerConfig

logger = logging.getLogger(__name__)

#: The ``FEATURE_VERSION`` whose detector scoring this module mirrors; on any other version
#: :class:`FastFeaturizer` warns and delegates every row to the featurizer itself.
MIRRORED_FEATURE_VERSION = 5

#: At most this many rows are scored with the per-row numpy paths; larger batches use the
#: vectorised library paths (scikit-learn's brute-force neighbour search, tree ``apply``).
SMALL_BATCH = 64


def _sq_distances(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Squared euclidean distances, (n, d) x (m, d) -> (n, m), summed in column order.

    The sum runs over the columns left to right, as scikit-learn's KD-tree does, so the
    square root of the result is bit-identical to its distances.
    """
    if len(A) * len(B) <= 256:  # few pairs: one vectorised pass (cumsum adds in column order too)
        diff = A[:, None, :] - B[None, :, :]
        return np.cumsum(diff * diff, axis=2)[:, :, -1]
    acc = np.zeros((len(A), len(B)))
    for j in range(A.shape[1]):
        diff = A[:, j, None] - B[None, :, j]
        np.multiply(diff, diff, out=diff)
        acc += diff
    return acc


def _sq_distances_to(A: np.ndarray, B_T: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Squared distances from each row of A (n, d) to the rows ``idx`` (n, k) of B, given
    as its transpose ``B_T`` (d, m); summed in column order -> (n, k)."""
    acc = np.zeros(idx.shape)
    for j in range(A.shape[1]):
        diff = B_T[j][idx] - A[:, j, None]
        np.multiply(diff, diff, out=diff)
        acc += diff
    return acc


class _Neighbours:
    """The nearest fitting rows of each query row, searched once for every KNN and LOF
    detector fitted on the same rows.

    A brute-force search (numpy for a few rows, scikit-learn's ``ArgKmin`` for many) finds
    the ``k + 1`` nearest for the largest ``k`` asked for, with distances computed as the
    detectors' KD- or ball tree computes them.  Each detector then takes its own ``k``;
    where its neighbours are (nearly) tied, which tied rows are kept and in what order (it
    changes the rounding of LOF's mean) is its tree's choice, so those rows are looked up
    in its own tree: the neighbours, ties included, are exactly those PyOD finds.
    """

    def __init__(self, fit_X: np.ndarray) -> None:
        self.fit_X = np.ascontiguousarray(fit_X, dtype=np.float64)
        self.fit_T = np.ascontiguousarray(self.fit_X.T)
        self.sq_norms = np.einsum("ij,ij->i", self.fit_X, self.fit_X)
        self.max_sq_norm = float(self.sq_norms.max(initial=0.0))
        self.k = 1
        self._nn = None

    def _search(self, Z: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray]:
        """The ``self.k + 1`` nearest: (distances, indices), sorted by distance then index."""
        key = ("neighbours", id(self))
        if key in cache:
            return cache[key]
        k1 = min(self.k + 1, len(self.fit_X))
        if len(Z) <= SMALL_BATCH:  # numpy (a tree's own query mostly checks its input)
            d2 = _sq_distances(Z, self.fit_X)
            if k1 < d2.shape[1]:
                idx = np.argpartition(d2, k1 - 1, axis=1)[:, :k1]
            else:
                idx = np.tile(np.arange(d2.shape[1]), (len(Z), 1))
            d2 = np.take_along_axis(d2, idx, axis=1)
        else:
            if self._nn is None:
                from sklearn.neighbors import NearestNeighbors

                self._nn = NearestNeighbors(algorithm="brute", metric="euclidean").fit(self.fit_X)
            idx = self._nn.kneighbors(Z, n_neighbors=k1, return_distance=False)
            d2 = _sq_distances_to(Z, self.fit_T, idx)  # exact, as the tree computes them
        order = np.lexsort((idx, d2), axis=1)
        cache[key] = (np.sqrt(np.take_along_axis(d2, order, axis=1)), np.take_along_axis(idx, order, axis=1))
        return cache[key]

    def _search_row(self, z: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_search` for one row ``z`` (1-D): the same distances (summed over the
        columns in order: a reduction over the first axis adds its rows one after another)."""
        key = ("neighbours-row", id(self))
        hit = cache.get(key)
        if hit is not None:
            return hit
        n = len(self.fit_X)
        k1 = min(self.k + 1, n)
        if k1 < n // 4:
            # Candidates first, from the cheap expansion |z|^2 - 2 z.f + |f|^2 (one matrix-
            # vector product): every row within 2 * margin of its k1-th smallest value.  The
            # margin bounds the rounding of both that expansion and the exact sum (a few
            # (d + 4) * 2^-53 of the squared norms), so the candidates hold every row the
            # exact distances rank among the k1 nearest, ties at the k1-th included.
            zz = float(z @ z)
            approx = self.fit_X @ (-2.0 * z)
            approx += self.sq_norms
            kth = np.partition(approx, k1 - 1)[k1 - 1]
            margin = 1e-12 * (len(z) + 4) * (zz + self.max_sq_norm + 1e-300)
            cand = np.flatnonzero(approx <= kth + 2.0 * margin)  # (|z|^2 left out on both sides)
        else:
            cand = np.arange(n)
        D = self.fit_T[:, cand] if len(cand) < n else self.fit_T.copy()
        D -= z[:, None]
        np.multiply(D, D, out=D)
        d2 = D[0].copy()  # exact: as _sq_distances, the columns added one after another (np.add.reduce
        for column in D[1:]:  # over this axis regroups the sums from 8 columns on)
            d2 += column
        if k1 < len(d2):
            idx = np.argpartition(d2, k1 - 1)[:k1]
            d2, idx = d2[idx], cand[idx]
        else:
            idx = cand
        order = np.lexsort((idx, d2))
        cache[key] = hit = (np.sqrt(d2[order]), idx[order])
        return hit

    def query_row(self, z: np.ndarray, cache: dict, k: int, tree) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`query` for one row ``z`` (1-D): (distances, indices), each (k,)."""
        full_dist, full_idx = self._search_row(z, cache)
        k = min(k, len(full_dist))
        dist, idx = full_dist[:k], full_idx[:k]
        if tree is not None:
            d2 = full_dist[: k + 1] ** 2
            slack = 1e-12 * (1.0 + np.einsum("ij,ij->i", z[None], z[None])[0])
            if (np.diff(d2) <= slack + 1e-9 * d2[1:]).any():
                dist, idx = tree.query(z[None], k=k)
                dist, idx = dist[0], idx[0]
        return dist, idx

    def query(self, Z: np.ndarray, cache: dict, k: int, tree) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest: (distances, indices), each (n, k), nearest first, as ``tree`` finds them.

        Rows with (nearly) tied neighbours among the ``k + 1`` nearest go to ``tree``.
        "Nearly": squared distances closer than 1e-12 (times 1 + |z|^2), far above the
        rounding of the brute-force search (~1e-16 of the squared norms), which therefore
        cannot have swapped two neighbours unseen.
        """
        full_dist, full_idx = self._search(Z, cache)
        k = min(k, full_dist.shape[1])
        dist, idx = full_dist[:, :k].copy(), full_idx[:, :k].copy()
        if tree is not None:
            d2 = full_dist[:, : k + 1] ** 2
            slack = 1e-12 * (1.0 + np.einsum("ij,ij->i", Z, Z))[:, None]
            tied = np.flatnonzero((np.diff(d2, axis=1) <= slack + 1e-9 * d2[:, 1:]).any(axis=1))
            if len(tied):
                dist[tied], idx[tied] = tree.query(Z[tied], k=k)
        return dist, idx


class _Scorer:
    """A compiled detector: ``__call__(Z, cache)`` scores rows (n, d); :meth:`row` one row."""

    def __call__(self, Z: np.ndarray, cache: dict) -> np.ndarray:
        raise NotImplementedError

    def row(self, z: np.ndarray, cache: dict) -> float:
        """The score of one scaled row ``z`` (1-D), as ``self(z[None], cache)[0]``."""
        return float(np.asarray(self(z[None], cache), dtype=np.float64).reshape(-1)[0])


class _KNN(_Scorer):
    def __init__(self, det, neighbours: _Neighbours) -> None:
        self.k = int(det.n_neighbors)
        self.method = det.method
        self.tree = getattr(det.neigh_, "_tree", None)
        self.neighbours = neighbours
        neighbours.k = max(neighbours.k, self.k)

    def __call__(self, Z, cache):
        # Only distances matter here, and equal distances sort the same whoever found them:
        # a few rows' exact numpy distances need no tree; ArgKmin's selection may, at ties.
        dist, _ = self.neighbours.query(Z, cache, self.k, self.tree if len(Z) > SMALL_BATCH else None)
        if self.method == "largest":
            return dist[:, -1]
        if self.method == "mean":
            return np.mean(dist, axis=1)
        return np.median(dist, axis=1)

    def row(self, z, cache):
        dist, _ = self.neighbours.query_row(z, cache, self.k, None)
        if self.method == "largest":
            return float(dist[-1])
        return float(np.add.reduce(dist)) / len(dist) if self.method == "mean" else float(np.median(dist))


class _LOF(_Scorer):
    def __init__(self, det, neighbours: _Neighbours) -> None:
        lof = det.detector_
        self.k = int(lof.n_neighbors_)
        self.dist_k = np.asarray(lof._distances_fit_X_[:, self.k - 1], dtype=np.float64)
        self.lrd = np.asarray(lof._lrd, dtype=np.float64)
        self.tree = getattr(lof, "_tree", None)
        self.neighbours = neighbours
        neighbours.k = max(neighbours.k, self.k)

    def __call__(self, Z, cache):
        dist, idx = self.neighbours.query(Z, cache, self.k, self.tree)
        reach = np.maximum(dist, self.dist_k[idx])
        lrd_x = 1.0 / (np.mean(reach, axis=1) + 1e-10)
        ratios = self.lrd[idx] / lrd_x[:, np.newaxis]
        return -(-np.mean(ratios, axis=1))

    def row(self, z, cache):
        dist, idx = self.neighbours.query_row(z, cache, self.k, self.tree)
        k = len(dist)  # np.mean is the sum over the same contiguous values, then / k
        reach = np.maximum(dist, self.dist_k[idx])
        lrd_x = 1.0 / (float(np.add.reduce(reach)) / k + 1e-10)
        return -(-(float(np.add.reduce(self.lrd[idx] / lrd_x)) / k))


class _GMM(_Scorer):
    """PyOD's GMM: minus scikit-learn's ``score_samples``, without its input checks."""

    def __init__(self, det) -> None:
        from sklearn.mixture import GaussianMixture
        from sklearn.mixture._base import _logsumexp

        if not isinstance(det.detector_, GaussianMixture):
            raise NotImplementedError("not a scikit-learn GaussianMixture")
        self.gm = det.detector_
        self.logsumexp = _logsumexp

    def __call__(self, Z, cache):
        return -self.logsumexp(self.gm._estimate_weighted_log_prob(Z), axis=1)


class _TailProbability(_Scorer):
    """ECOD and COPOD; detectors fitted on the same rows share one set of tail counts."""

    def __init__(self, det) -> None:
        self.method = det.method
        self.sorted_T = np.ascontiguousarray(det.sorted_.T)
        self.skew_sign = det.skew_sign_
        self.group: _TailProbability = self
        self._columns: list[list[float]] | None = None  # the sorted columns as lists, built on first use

    def _tails(self, Z, cache):
        key = ("tails", id(self.group))
        if key not in cache:
            sorted_T = self.group.sorted_T
            n = sorted_T.shape[1]
            cols = range(Z.shape[1])
            if len(Z) == 1:  # counting beats d binary searches for one row
                at_most = (sorted_T <= Z.T).sum(axis=1)[None, :]
                at_least = n - (sorted_T < Z.T).sum(axis=1)[None, :]
            else:
                at_most = np.column_stack([np.searchsorted(sorted_T[j], Z[:, j], side="right") for j in cols])
                at_least = n - np.column_stack([np.searchsorted(sorted_T[j], Z[:, j], side="left") for j in cols])
            cache[key] = (-np.log((at_most + 1.0) / (n + 1.0)), -np.log((at_least + 1.0) / (n + 1.0)))
        return cache[key]

    def __call__(self, Z, cache):
        u_left, u_right = self._tails(Z, cache)
        return _features.tail_outlyingness(u_left, u_right, self.skew_sign, self.method)

    def _tails_row(self, z, cache):
        """One row's (u_left, u_right, u_skew) (1-D each), shared by the group.  The counts
        come from binary searches in the sorted columns held as Python lists (exact float
        comparisons, as ``np.searchsorted``'s), much cheaper than numpy calls for one value."""
        key = ("tails-row", id(self.group))
        hit = cache.get(key)
        if hit is not None:
            return hit
        g = self.group
        if g._columns is None:
            g._columns = g.sorted_T.tolist()
            g._skew_left = np.sign(g.skew_sign - 1)
            g._skew_right = np.sign(g.skew_sign + 1)
        n = g.sorted_T.shape[1]
        d = len(z)
        counts = np.empty(2 * d)
        for j, (column, value) in enumerate(zip(g._columns, z.tolist())):
            counts[j] = bisect.bisect_right(column, value)
            counts[d + j] = n - bisect.bisect_left(column, value)
        u = -np.log((counts + 1.0) / (n + 1.0))
        u_left, u_right = u[:d], u[d:]
        u_skew = -u_left * g._skew_left + u_right * g._skew_right
        cache[key] = hit = (u_left, u_right, u_skew)
        return hit

    def row(self, z, cache):
        # tail_outlyingness for one row, with the skew signs precomputed (the same arithmetic)
        u_left, u_right, u_skew = self._tails_row(z, cache)
        if self.method == "ecod":
            return float(np.add.reduce(np.maximum(np.maximum(u_left, u_right), u_skew)))
        if self.method == "copod":
            return float(np.add.reduce(np.maximum(u_skew, (u_left + u_right) / 2)))
        return super().row(z, cache)


class _HBOS(_Scorer):
    def __init__(self, det) -> None:
        if isinstance(det.n_bins, str):
            raise NotImplementedError("n_bins='auto'")
        edges = np.asarray(det.bin_edges_, dtype=np.float64)
        hist = np.asarray(det.hist_, dtype=np.float64)
        n_bins = int(det.n_bins)
        # Read the per-bin scores back from the bank's scoring function: probe each bin at
        # its (inclusive) upper edge, and one point far below the range for the floor value.
        width = edges[1] - edges[0]
        probes = np.vstack([edges[1:], edges[0] - 10.0 * (np.abs(width) * det.tol + 1.0)])
        table = hbos_column_scores(probes, edges, hist, det.alpha, det.tol)
        self.edges_T = np.ascontiguousarray(edges.T)
        self.bin_scores = table[:n_bins]  # (n_bins, d)
        self.floor = table[n_bins]  # (d,)
        self.n_bins = n_bins
        self.tol = float(det.tol)
        d = edges.shape[1]
        padded = np.zeros((d, n_bins + 2))
        padded[:, 1:-1] = self.bin_scores.T
        self.table = padded.ravel()
        self.outside = np.zeros((d, n_bins + 2), dtype=bool)
        self.outside[:, [0, -1]] = True
        self.outside = self.outside.ravel()
        self.row_offsets = np.arange(d) * (n_bins + 2)

    def __call__(self, Z, cache):
        n, d = Z.shape
        e = self.edges_T  # (d, n_bins + 1)
        if n <= SMALL_BATCH:
            ind = (e[None, :, :] < Z[:, :, None]).sum(axis=2)  # == np.digitize(x, e, right=True)
        else:
            ind = np.column_stack([np.searchsorted(e[i], Z[:, i], side="left") for i in range(d)])
        cols = np.arange(d)
        out = self.bin_scores[np.clip(ind - 1, 0, self.n_bins - 1), cols]
        inside = (ind >= 1) & (ind <= self.n_bins)
        out = np.where(inside, out, self.floor)
        near_below = (ind == 0) & ((e[:, 0] - Z) <= (e[:, 1] - e[:, 0]) * self.tol)
        near_above = (ind == self.n_bins + 1) & ((Z - e[:, -1]) <= (e[:, -1] - e[:, -2]) * self.tol)
        out = np.where(near_below, self.bin_scores[0], out)
        out = np.where(near_above, self.bin_scores[self.n_bins - 1], out)
        return -np.sum(out, axis=1)

    def row(self, z, cache):
        # Inside every column's range: one lookup in a table of the bin scores (padded with
        # flagged cells for the two outside bins, which take the general path above).
        ind = (self.edges_T < z[:, None]).sum(axis=1)
        cells = ind + self.row_offsets
        if self.outside[cells].any():
            return super().row(z, cache)
        return -float(np.add.reduce(self.table[cells]))


class _IForest(_Scorer):
    def __init__(self, det) -> None:
        from sklearn.ensemble._iforest import _average_path_length

        self.det = det
        forest = det.detector_
        trees = [est.tree_ for est in forest.estimators_]
        n_features = forest.n_features_in_
        subsample = forest._max_features != n_features
        width = max(t.node_count for t in trees)
        n_trees = len(trees)
        feature = np.zeros((n_trees, width), dtype=np.intp)
        threshold = np.full((n_trees, width), np.inf)
        left = np.tile(np.arange(width), (n_trees, 1))
        right = left.copy()
        value = np.zeros((n_trees, width))
        for t, (tree, feats) in enumerate(zip(trees, forest.estimators_features_)):
            m = tree.node_count
            internal = tree.children_left[:m] != -1
            f = tree.feature[:m].astype(np.intp)
            if subsample:
                f = np.asarray(feats, dtype=np.intp)[np.clip(f, 0, None)]
            feature[t, :m] = np.where(internal, f, 0)
            threshold[t, :m] = np.where(internal, tree.threshold[:m], np.inf)
            left[t, :m] = np.where(internal, tree.children_left[:m], np.arange(m))
            right[t, :m] = np.where(internal, tree.children_right[:m], np.arange(m))
            value[t, :m] = forest._decision_path_lengths[t][:m] + forest._average_path_length_per_tree[t][:m] - 1.0
        offset = (np.arange(n_trees) * width)[:, None]
        self.feature = feature.ravel()
        self.threshold = threshold.ravel()
        self.left = (left + offset).ravel()
        self.right = (right + offset).ravel()
        self.value = value.ravel()
        self.roots = offset.ravel()
        self.depth = int(max(int(np.max(forest._decision_path_lengths[t])) for t in range(n_trees)))
        self.denominator = n_trees * _average_path_length([forest._max_samples])
        self.offset_ = forest.offset_
        self._row_layout([tree.node_count for tree in trees], width)

    def _row_layout(self, node_counts: list[int], width: int) -> None:
        """The nodes again for one row at a time: level by level across the trees (all
        roots together, then all nodes at depth 1, ...), so that each step of the walk
        reads few cache lines; node ``g`` is held as ``2 * g``, its children at ``2 * g``
        (left) and ``2 * g + 1`` (right), so that a step is ``node = children[node + right]``."""
        old = np.concatenate([t * width + np.arange(m) for t, m in enumerate(node_counts)])
        depth = np.full(len(self.feature), -1)
        depth[self.roots] = 0
        frontier = self.roots
        for level in range(1, self.depth + 2):
            children = np.concatenate([self.left[frontier], self.right[frontier]])
            children = children[depth[children] < 0]
            depth[children] = level
            frontier = children
        order = old[np.lexsort((old, depth[old]))]
        rank = np.empty(len(self.feature), dtype=np.intp)
        rank[order] = np.arange(len(order))
        self.feature2 = np.repeat(self.feature[order], 2)
        self.threshold2 = np.repeat(self.threshold[order], 2)
        self.children2 = 2 * np.column_stack([rank[self.left[order]], rank[self.right[order]]]).ravel()
        self.value2 = np.repeat(self.value[order], 2)
        self.roots2 = 2 * rank[self.roots]

    def __call__(self, Z, cache):
        if len(Z) > SMALL_BATCH:
            return self.det.decision_function(Z)
        X32 = Z.astype(np.float32)
        rows = np.arange(len(Z))[:, None]
        node = np.broadcast_to(self.roots, (len(Z), len(self.roots)))
        for _ in range(self.depth):
            go_left = X32[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        depths = np.cumsum(self.value[node], axis=1)[:, -1]
        return self._finish(depths)

    def _finish(self, depths: np.ndarray) -> np.ndarray:
        scores = 2 ** (-np.divide(depths, self.denominator, out=np.ones_like(depths), where=self.denominator != 0))
        return -((-scores) - self.offset_)

    def row(self, z, cache):
        x32 = z.astype(np.float32)
        node = self.roots2
        feature, threshold, children = self.feature2, self.threshold2, self.children2
        for _ in range(self.depth):
            right = x32[feature[node]] > threshold[node]  # not (x <= threshold): no NaN here
            node = children[node + right]
        depths = np.cumsum(self.value2[node])[-1:]  # summed over the trees in order, as __call__ does
        if self.denominator != 0:  # _finish's arithmetic, less its general-case calls
            scores = 2 ** (-(depths / self.denominator))
        else:
            scores = 2 ** -np.ones_like(depths)
        return -((-float(scores[0])) - float(self.offset_))


class _PCA(_Scorer):
    def __init__(self, det) -> None:
        self.standardize = bool(det.standardization)
        if self.standardize:
            self.mean = np.asarray(det.scaler_.mean_, dtype=np.float64)
            self.scale = np.asarray(det.scaler_.scale_, dtype=np.float64)
        self.components = np.asarray(det.selected_components_, dtype=np.float64)
        self.weights = np.asarray(det.selected_w_components_, dtype=np.float64)

    def __call__(self, Z, cache):
        if self.standardize:
            Z = (Z - self.mean) / self.scale
        return np.sum(np.sqrt(_sq_distances(Z, self.components)) / self.weights, axis=1).ravel()

    def row(self, z, cache):
        if self.standardize:
            z = (z - self.mean) / self.scale
        diff = z - self.components
        return float(np.add.reduce(np.sqrt(np.cumsum(diff * diff, axis=1)[:, -1]) / self.weights))


class _CBLOF(_Scorer):
    def __init__(self, det) -> None:
        from sklearn.cluster import KMeans

        if not isinstance(det.clustering_estimator_, KMeans):
            raise NotImplementedError("a clustering estimator other than KMeans")
        self.centers = np.asarray(det.cluster_centers_, dtype=np.float64)
        self.small = np.isin(np.arange(len(self.centers)), det.small_cluster_labels_)
        self.large = np.isin(np.arange(len(self.centers)), det.large_cluster_labels_)
        self.large_centers = self.centers[np.asarray(det.large_cluster_labels_)]
        self.weights = np.asarray(det.cluster_sizes_, dtype=np.float64) if det.use_weights else None

    def __call__(self, Z, cache):
        labels = np.argmin(_sq_distances(Z, self.centers), axis=1)
        scores = np.zeros(len(Z))
        small = self.small[labels]
        large = self.large[labels]
        if small.any():
            scores[small] = np.min(np.sqrt(_sq_distances(Z[small], self.large_centers)), axis=1)
        if large.any():
            scores[large] = paired_distances(Z[large], self.centers[labels[large]])  # summed as PyOD's numba kernel does
        if self.weights is not None:
            scores = scores * self.weights[labels]
        return scores.ravel()

    def row(self, z, cache):
        diff = z - self.centers
        label = int(np.argmin(np.cumsum(diff * diff, axis=1)[:, -1]))
        score = 0.0
        if self.small[label]:
            diff = z - self.large_centers
            score = float(np.minimum.reduce(np.sqrt(np.cumsum(diff * diff, axis=1)[:, -1])))
        elif self.large[label]:
            score = math.sqrt(float(np.cumsum(np.square(self.centers[label] - z))[-1]))  # in column order, as paired_distances
        if self.weights is not None:
            score = score * float(self.weights[label])
        return score


class _Fallback(_Scorer):
    def __init__(self, det) -> None:
        self.det = det

    def __call__(self, Z, cache):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(self.det.decision_function(Z), dtype=np.float64).reshape(-1)


class _Dead(_Scorer):
    def __call__(self, Z, cache):
        return np.zeros(len(Z))


#: The detector classes with a fast path, by module and name: the bank's, and PyOD's own
#: (in featurizers pickled before the bank, e.g. adapted bundles), as the bank's names.
_FAST_CLASSES = {
    **{f"anomaly_gym.envs.bank.{name}": name for name in ("HBOS", "IForest", "PCA", "CBLOF", "KNN", "LOF")},
    "pyod.models.hbos.HBOS": "HBOS",
    "pyod.models.iforest.IForest": "IForest",
    "pyod.models.pca.PCA": "PCA",
    "pyod.models.cblof.CBLOF": "CBLOF",
    "pyod.models.gmm.GMM": "GMM",
    "pyod.models.knn.KNN": "KNN",
    "pyod.models.lof.LOF": "LOF",
    "anomaly_gym.envs.features._TailProbabilityDetector": "tails",
}
_SCORERS = {"tails": _TailProbability, "HBOS": _HBOS, "IForest": _IForest, "PCA": _PCA, "CBLOF": _CBLOF, "GMM": _GMM}


def _compile(det, neighbour_sets: list[_Neighbours]) -> Callable[[np.ndarray, dict], np.ndarray]:
    """The fast scorer of one fitted detector (or its own decision_function)."""
    if det is None:
        return _Dead()
    cls = f"{type(det).__module__}.{type(det).__name__}"
    if cls in ("anomaly_gym.envs.features._RelaxedCBLOF", "anomaly_gym.envs.features._RankPCA"):
        det = det.detector_  # the bank's CBLOF fitted with relaxed splits; its PCA fitted on the data's rank
        cls = f"{type(det).__module__}.{type(det).__name__}"
    kind = _FAST_CLASSES.get(cls)
    try:
        if kind in _SCORERS:
            return _SCORERS[kind](det)
        if kind in ("KNN", "LOF"):
            est = det.neigh_ if kind == "KNN" else det.detector_
            euclidean = (est.metric == "euclidean" or (est.metric == "minkowski" and est.p == 2)) and not est.metric_params
            if kind == "KNN":
                euclidean = euclidean and det.method in ("largest", "mean", "median")
            if euclidean:
                fit_X = est._fit_X
                group = next((g for g in neighbour_sets if g.fit_X.shape == fit_X.shape and np.array_equal(g.fit_X, fit_X)), None)
                if group is None:
                    group = _Neighbours(fit_X)
                    neighbour_sets.append(group)
                return _KNN(det, group) if kind == "KNN" else _LOF(det, group)
    except (AttributeError, NotImplementedError, TypeError, ValueError, IndexError) as exc:
        logger.info("no fast path for %s (%s); using its decision_function", cls, exc)
    return _Fallback(det)


class FastFeaturizer:
    """A fitted :class:`Featurizer`, compiled for fast scoring of single rows and batches.

    Args:
        featurizer: A fitted featurizer.  It is not modified; the compiled scorers hold
            references to its fitted detectors.

    Example:
        >>> feat = Featurizer(config).fit(X_window)
        >>> fast = FastFeaturizer(feat)
        >>> fast.transform_row(x)          # == feat.transform(x[None])[0]
    """

    def __init__(self, featurizer: Featurizer) -> None:
        featurizer._check_fitted()
        self.featurizer = featurizer
        self.exact = _features.FEATURE_VERSION == MIRRORED_FEATURE_VERSION
        if not self.exact:
            warnings.warn(
                f"FastFeaturizer mirrors feature version {MIRRORED_FEATURE_VERSION} but the featurizer is at "
                f"{_features.FEATURE_VERSION}; scoring falls back to Featurizer.transform (slow)",
                RuntimeWarning,
                stacklevel=2,
            )
        neighbour_sets: list[_Neighbours] = []
        self._scorers = [_compile(det, neighbour_sets) for det in featurizer.detectors_]
        tails = [s for s in self._scorers if isinstance(s, _TailProbability)]
        for s in tails:  # ECOD and COPOD fitted on the same rows share their tail counts
            s.group = next(t for t in tails if t.sorted_T.shape == s.sorted_T.shape and np.array_equal(t.sorted_T, s.sorted_T))
        # The featurizer's own feature code, fed with the fast detector scores.
        self._proxy = copy.copy(featurizer)
        self._proxy.raw_scores = self.raw_scores
        self._lo, self._span = featurizer.lo_, featurizer.span_
        self.n_columns = featurizer.n_columns_
        self.n_features = featurizer.n_features
        self._row_post = _RowFeatures(featurizer)

    @property
    def fast_detectors(self) -> list[str]:
        """The detector specs that have a fast path (the others use ``decision_function``)."""
        return [spec for spec, s in zip(self.featurizer.config.detectors, self._scorers) if not isinstance(s, _Fallback)]

    def raw_scores(self, X: np.ndarray) -> np.ndarray:
        """Each detector's raw score of the (unscaled) rows ``X``, shape (n, n_detectors)."""
        Z = _features.scale_rows(X, self._lo, self._span)
        cache: dict = {}
        out = np.empty((len(Z), len(self._scorers)))
        with one_openmp_thread():  # the same neighbours among ties as the featurizer's own path
            for j, scorer in enumerate(self._scorers):
                scores = np.asarray(scorer(Z, cache), dtype=np.float64).reshape(-1)
                out[:, j] = scores if np.isfinite(scores).all() else Featurizer._finite(scores)
        return out

    def transform(self, X) -> np.ndarray:
        """Features of every row of ``X``, as ``Featurizer.transform`` gives them."""
        if not self.exact:
            return self.featurizer.transform(X)
        X = self.featurizer._check_X(X, fitting=False)
        out = np.empty((len(X), self.n_features), dtype=np.float32)
        step = self.featurizer.config.chunk_size
        for start in range(0, len(X), step):
            out[start : start + step] = self._proxy._transform_chunk(X[start : start + step])
        return out

    def transform_row(self, x: np.ndarray) -> np.ndarray:
        """Features of one row (1-D, finite, ``n_columns`` values): a 1-D float32 array."""
        x = np.asarray(x, dtype=np.float64).reshape(1, -1)
        if x.shape[1] != self.n_columns or not np.isfinite(x).all():
            return self.transform(x)[0]  # raises the featurizer's own message
        if not self.exact:
            return self.featurizer.transform(x)[0]
        z = x[0] - self._lo
        z /= self._span
        if not np.abs(z).max() <= _features.SCALE_CLIP:  # out of range, or overflowed: clipped
            z = _features.scale_rows(x, self._lo, self._span)[0]
        cache: dict = {}
        return self._row_post([scorer.row(z, cache) for scorer in self._scorers])

    def transform_row_generic(self, x: np.ndarray) -> np.ndarray:
        """:meth:`transform_row` through the batch code (the featurizer's own post-processing
        of the fast detector scores): the reference the single-row path is tested against."""
        x = np.asarray(x, dtype=np.float64).reshape(1, -1)
        return self._proxy._transform_chunk(self.featurizer._check_X(x, fitting=False))[0]


class _RowFeatures:
    """``Featurizer._transform_chunk``'s post-processing of the detector scores, for one row.

    The same arithmetic on the same values (the same numpy reductions over the same number
    of contiguous values, exact float comparisons for the percentile ranks), without the
    per-call overhead of numpy on arrays of one row: the percentile ranks are binary
    searches in Python lists, the clipping of robust z-scores happens only where needed.
    ``tests/envs/test_stream.py`` checks it against the featurizer's own code, bit for bit.
    """

    def __init__(self, featurizer: Featurizer) -> None:
        cfg = featurizer.config
        reference = [column.tolist() for column in np.asarray(featurizer.sorted_scores_).T]
        dead = [det is None for det in featurizer.detectors_]
        self.n_ref = 2.0 * len(featurizer.sorted_scores_)
        self.reference = list(
            zip(reference, np.asarray(featurizer.median_, dtype=np.float64).tolist(), np.asarray(featurizer.scale_, dtype=np.float64).tolist(), dead)
        )
        self.live = [j for j, d in enumerate(dead) if not d] or list(range(len(dead)))
        self.some_dead = len(self.live) < len(dead)
        self.per_detector, self.consensus = cfg.per_detector, cfg.consensus
        self.agreeing = [int(j) for j in featurizer.agreeing_] if cfg.agreeing else []
        self.descriptors = np.asarray(featurizer.descriptors_, dtype=np.float64).tolist() if cfg.descriptors else []
        lo, hi = featurizer.feature_bounds()
        self.lo, self.hi = lo.astype(np.float64).tolist(), hi.astype(np.float64).tolist()

    def __call__(self, scores: list[float]) -> np.ndarray:
        """Features (1-D float32) of one row from its detectors' raw scores."""
        if not all(map(math.isfinite, scores)):  # as raw_scores does, for a column of one row
            scores = [float(Featurizer._finite(np.array([s]))[0]) for s in scores]
        pct, z, size = [], [], []
        for s, (column, med, scale, dead) in zip(scores, self.reference):
            if dead:
                pct.append(0.5)
                z.append(0.0)
                size.append(0.0)
                continue
            pct.append((bisect.bisect_left(column, s) + bisect.bisect_right(column, s)) / self.n_ref)
            r = (s - med) / scale  # float arithmetic, as numpy's on arrays
            r = 0.0 if r != r else (Z_CLIP if r > Z_CLIP else (-Z_CLIP if r < -Z_CLIP else r))
            z.append(r)
            size.append(abs(r))
        logs = np.log1p(np.array(size)).tolist()  # numpy's log1p, as the featurizer's
        z = [(lg if r > 0 else (-lg if r < 0 else 0.0)) for r, lg in zip(z, logs)]
        feats: list[float] = []
        if self.per_detector:
            for p, r in zip(pct, z):
                feats += (p, r)
        if self.consensus:
            live_pct = [pct[j] for j in self.live] if self.some_dead else pct
            live_z = [z[j] for j in self.live] if self.some_dead else z
            p = np.array(live_pct)
            n = len(live_pct)
            mean = float(np.add.reduce(p)) / n  # ndarray.mean and .std, less their dispatch
            dev = p - mean
            np.multiply(dev, dev, out=dev)
            feats += (mean, max(live_pct), min(live_pct), math.sqrt(float(np.add.reduce(dev)) / n), float(np.add.reduce(np.array(live_z))) / n)
        if self.agreeing:
            k = len(self.agreeing)
            feats += (float(np.add.reduce(np.array([pct[j] for j in self.agreeing]))) / k, float(np.add.reduce(np.array([z[j] for j in self.agreeing]))) / k)
        feats += self.descriptors
        return np.array([lo if v < lo else (hi if v > hi else v) for v, lo, hi in zip(feats, self.lo, self.hi)], dtype=np.float32)


class SlidingWindowFeaturizer:
    """Featurize a stream row by row with a featurizer fitted on its recent rows.

    The first ``warmup`` rows only fill the window (:meth:`update` returns ``None``); then
    the featurizer is fitted on the window and every later row is featurized *before* it
    joins the window (a row never influences its own features).  Every ``refit_every``
    rows the featurizer is refitted on the last ``window`` rows.  Refits run inline, so
    the output is deterministic: the same stream always gives the same features.

    Args:
        config: The featurizer configuration (a policy bundle's ``featurizer_config``).
        n_columns: Number of feature columns of each row.
        warmup: Rows collected before the first fit (at least 10).
        window: Rows kept for fitting (a bounded deque; at least ``warmup``).
        refit_every: Rows between refits.
    """

    def __init__(self, config: FeaturizerConfig, n_columns: int, *, warmup: int = 256, window: int = 2048, refit_every: int = 1024) -> None:
        if warmup < 10:
            raise ValueError(f"warmup must be at least 10 rows (the featurizer needs 10 to fit), got {warmup}")
        if window < warmup:
            raise ValueError(f"window ({window}) must be at least warmup ({warmup})")
        if refit_every < 1:
            raise ValueError(f"refit_every must be a positive number of rows, got {refit_every}")
        if n_columns < 1:
            raise ValueError("a stream needs at least one feature column")
        self.config = config
        self.n_columns = n_columns
        self.warmup = warmup
        self.window = window
        self.refit_every = refit_every
        self._rows: deque[np.ndarray] = deque(maxlen=window)
        self._since_fit = 0
        self.n_seen = 0
        self.fast: FastFeaturizer | None = None
        self.n_fits = 0
        self.fit_seconds = 0.0

    @property
    def fitted(self) -> bool:
        return self.fast is not None

    def window_array(self) -> np.ndarray:
        """The rows now in the window, oldest first, shape (n, n_columns)."""
        return np.array(self._rows, dtype=np.float64).reshape(-1, self.n_columns)

    def transform_row(self, x: np.ndarray) -> np.ndarray | None:
        """Features of row ``x`` with the current fit, or ``None`` before the first fit."""
        return self.fast.transform_row(x) if self.fast is not None else None

    def add(self, x: np.ndarray) -> bool:
        """Add row ``x`` to the window; refit when it is due.  True when it refitted.

        Raises:
            ValueError: if ``x`` has the wrong length or a non-finite value.
        """
        x = np.array(x, dtype=np.float64).reshape(-1)
        if x.shape[0] != self.n_columns:
            raise ValueError(f"row has {x.shape[0]} values, expected {self.n_columns}")
        if not np.isfinite(x).all():
            raise ValueError("row has a NaN or infinite value; such rows cannot join the window")
        self._rows.append(x)
        self.n_seen += 1
        self._since_fit += 1
        due = self._since_fit >= self.refit_every if self.fast is not None else self.n_seen >= self.warmup
        if due:
            self.refit()
        return due

    def update(self, x: np.ndarray) -> np.ndarray | None:
        """Features of row ``x`` (``None`` during warm-up), then add it to the window."""
        feats = self.transform_row(x)
        self.add(x)
        return feats

    def refit(self) -> None:
        """Fit the featurizer on the rows now in the window."""
        t0 = time.perf_counter()
        self.fast = FastFeaturizer(Featurizer(self.config).fit(self.window_array()))
        self.fit_seconds += time.perf_counter() - t0
        self.n_fits += 1
        self._since_fit = 0
