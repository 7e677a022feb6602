"""Active anomaly discovery baselines: which row should the analyst see next?

Every strategy follows one small interface, so the benchmark drives them all alike:

- :meth:`ActiveStrategy.start` with a :class:`DiscoveryData` (the task's raw rows, its
  transferable features and a prior ranking; never its labels) and a seed;
- :meth:`ActiveStrategy.select` returns the index of a row not yet shown;
- :meth:`ActiveStrategy.observe` tells it that row's label (1 = anomaly, 0 = normal).

:func:`run_discovery` plays one strategy against a labelled task and returns the labels
in the order they were revealed (its cumulative sum is the discovery curve).

Strategies here: :class:`RandomStrategy`, :class:`RankingStrategy` (an unsupervised score,
ignoring feedback: IForest via :func:`iforest_ranking`, or any other score such as the
zero-shot detection policy's), :class:`AADStrategy` (Das et al., ICDM 2016: feedback that
re-weights the leaves of an isolation forest) and :class:`ActiveLearningStrategy` (greedy
active learning: a logistic-regression head on the transferable features, refitted every
``refit_every`` answers).  The meta-trained policy is in :mod:`anomaly_gym.meta.discover`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class DiscoveryData:
    """What a strategy may see of a task: rows, transferable features, a prior score (no labels)."""

    X: np.ndarray
    """Raw rows, shape (n, d)."""
    features: np.ndarray
    """Transferable detector features of the same rows, shape (n, f)."""
    prior: np.ndarray
    """An unsupervised anomaly score per row (higher = more anomalous), shape (n,)."""

    def __post_init__(self) -> None:
        n = len(self.X)
        if self.features.shape[0] != n or self.prior.shape != (n,):
            raise ValueError(
                f"X, features and prior must describe the same {n} rows (got {self.features.shape[0]} feature rows and prior of shape {self.prior.shape})"
            )


class ActiveStrategy:
    """Base class: keeps track of the rows shown so far."""

    name = "strategy"

    def start(self, data: DiscoveryData, seed: int = 0) -> None:
        """Begin on a new task; forgets everything learned before."""
        self.data_ = data
        self.rng_ = np.random.default_rng(seed)
        self.shown_ = np.zeros(len(data.X), dtype=bool)
        self.indices_: list[int] = []
        self.labels_: list[int] = []

    def select(self) -> int:
        """The index of the next row to show (never one shown before)."""
        raise NotImplementedError

    def observe(self, index: int, label: int) -> None:
        """Record the analyst's answer for row ``index``."""
        if self.shown_[index]:
            raise ValueError(f"row {index} was already shown")
        if label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {label!r}")
        self.shown_[index] = True
        self.indices_.append(int(index))
        self.labels_.append(int(label))

    def _best_unshown(self, scores: np.ndarray) -> int:
        return int(np.argmax(np.where(self.shown_, -np.inf, scores)))


class RandomStrategy(ActiveStrategy):
    """Shows a uniformly random unshown row."""

    name = "random"

    def select(self) -> int:
        free = np.flatnonzero(~self.shown_)
        return int(free[self.rng_.integers(len(free))])


class RankingStrategy(ActiveStrategy):
    """Shows rows in the order of a fixed unsupervised score, ignoring the answers.

    Args:
        score: ``score(data, seed) -> scores`` (higher = more anomalous); default the prior.
        name: Name in reports.
    """

    def __init__(self, score: Callable[[DiscoveryData, int], np.ndarray] | None = None, name: str = "prior") -> None:
        self.score = score
        self.name = name

    def start(self, data: DiscoveryData, seed: int = 0) -> None:
        super().start(data, seed)
        scores = data.prior if self.score is None else self.score(data, seed)
        self.scores_ = np.asarray(scores, dtype=np.float64)

    def select(self) -> int:
        return self._best_unshown(self.scores_)


def iforest_ranking(data: DiscoveryData, seed: int) -> np.ndarray:
    """Scikit-learn's isolation forest (100 trees, 256 samples) fitted on the raw rows."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=100, max_samples=min(256, len(data.X)), random_state=seed).fit(data.X)
    return -forest.score_samples(data.X)


def _average_path(n: np.ndarray) -> np.ndarray:
    """c(n): the average path length of an unsuccessful search in a binary tree of n points."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    out[n == 2] = 1.0
    return out


def _node_depths(tree) -> np.ndarray:
    depth = np.zeros(tree.node_count)
    for node in range(tree.node_count):  # children always come after their parent
        for child in (tree.children_left[node], tree.children_right[node]):
            if child >= 0:
                depth[child] = depth[node] + 1
    return depth


def forest_leaf_matrix(X: np.ndarray, n_trees: int = 100, max_samples: int = 256, seed: int = 0):
    """Rows as sparse vectors over the leaves of an isolation forest.

    Entry (row, leaf) is ``-h / n_trees`` for the leaf the row falls into in each tree,
    ``h`` being the leaf's path length (depth plus c(size)); so with all weights 1 the
    score is IForest's negative mean path length (the same ranking as IForest).
    """
    from scipy import sparse
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=n_trees, max_samples=min(max_samples, len(X)), random_state=seed).fit(X)
    cols, vals, offset = [], [], 0
    for est, feats in zip(forest.estimators_, forest.estimators_features_):
        tree = est.tree_
        path = _node_depths(tree) + _average_path(tree.n_node_samples)
        leaf = est.apply(np.asarray(X[:, feats], dtype=np.float32))
        cols.append(leaf + offset)
        vals.append(-path[leaf] / n_trees)
        offset += tree.node_count
    n = len(X)
    rows = np.tile(np.arange(n), n_trees)
    Z = sparse.csr_matrix((np.concatenate(vals), (rows, np.concatenate(cols))), shape=(n, offset))
    used = np.unique(Z.indices)  # keep only the leaves some row falls into
    return Z[:, used].tocsr()


class AADStrategy(ActiveStrategy):
    """Active Anomaly Discovery (Das, Wong, Dietterich, Fern, Emmott; ICDM 2016) on IForest leaves.

    Every row is a vector ``z`` over the leaves of an isolation forest
    (:func:`forest_leaf_matrix`) and its score is ``w . z``; with ``w = 1`` the ranking is
    IForest's.  After each answer the weights minimise AAD's hinge loss around the
    ``tau``-quantile score ``q`` of the current ranking (labelled anomalies should score
    above ``q``, labelled normals below), with an L2 pull towards the prior weights:

    ``mean_A max(0, q - w.z) + mean_N max(0, w.z - q) + lam/2 |w - 1|^2``

    minimised by ``n_iter`` subgradient steps (``q`` taken from the ranking before the answer), as in the
    paper's tree-based variant (Das et al., 2017) without its pairwise constraints.

    Args:
        n_trees, max_samples: The isolation forest.
        tau: Share of rows the analyst is expected to check (defines ``q``).
        lam: Strength of the pull towards the prior weights.
        learning_rate, n_iter: The subgradient descent per answer.
    """

    name = "aad"

    def __init__(self, n_trees: int = 100, max_samples: int = 256, tau: float = 0.03, lam: float = 0.1, learning_rate: float = 1.0, n_iter: int = 20) -> None:
        self.n_trees = n_trees
        self.max_samples = max_samples
        self.tau = tau
        self.lam = lam
        self.learning_rate = learning_rate
        self.n_iter = n_iter

    def start(self, data: DiscoveryData, seed: int = 0) -> None:
        super().start(data, seed)
        self.Z_ = forest_leaf_matrix(np.asarray(data.X, dtype=np.float64), self.n_trees, self.max_samples, seed)
        self.w_ = np.ones(self.Z_.shape[1])
        self.scores_ = self.Z_ @ self.w_

    def select(self) -> int:
        return self._best_unshown(self.scores_)

    def observe(self, index: int, label: int) -> None:
        super().observe(index, label)
        self._update()

    def _update(self) -> None:
        y = np.asarray(self.labels_)
        Zt = self.Z_[np.asarray(self.indices_)].T.tocsr()  # leaves x labelled rows
        k = max(1, int(np.ceil(self.tau * self.Z_.shape[0])))
        counts = {c: max(int((y == c).sum()), 1) for c in (0, 1)}
        q = np.partition(self.scores_, -k)[-k]  # the current ranking's tau-quantile, fixed per answer
        for _ in range(self.n_iter):
            s = Zt.T @ self.w_
            # subgradient of the hinge terms: -z for anomalies below q, +z for normals above q
            coef = np.where(y == 1, -(s < q).astype(float) / counts[1], (s > q).astype(float) / counts[0])
            grad = self.lam * (self.w_ - 1.0) + Zt @ coef
            self.w_ -= self.learning_rate * grad
        self.scores_ = self.Z_ @ self.w_


class ActiveLearningStrategy(ActiveStrategy):
    """Greedy active learning: show the row a supervised head finds most anomalous.

    A class-balanced logistic regression on the transferable features (standardised) is
    refitted every ``refit_every`` answers once both classes have been seen; until then
    rows are shown in the prior's order.

    Args:
        refit_every: Answers between refits.
        C: Inverse regularisation strength of the logistic regression.
    """

    name = "active-learning"

    def __init__(self, refit_every: int = 10, C: float = 1.0) -> None:
        self.refit_every = refit_every
        self.C = C

    def start(self, data: DiscoveryData, seed: int = 0) -> None:
        super().start(data, seed)
        f = np.asarray(data.features, dtype=np.float64)
        self.F_ = (f - f.mean(axis=0)) / np.where(f.std(axis=0) > 1e-9, f.std(axis=0), 1.0)
        self.scores_ = np.asarray(data.prior, dtype=np.float64)
        self._fitted_at = 0

    def select(self) -> int:
        return self._best_unshown(self.scores_)

    def observe(self, index: int, label: int) -> None:
        super().observe(index, label)
        n = len(self.labels_)
        both = 0 < sum(self.labels_) < n
        if both and (self._fitted_at == 0 or n - self._fitted_at >= self.refit_every):
            from sklearn.linear_model import LogisticRegression

            head = LogisticRegression(C=self.C, class_weight="balanced", max_iter=200)
            head.fit(self.F_[self.indices_], self.labels_)
            self.scores_ = head.decision_function(self.F_)
            self._fitted_at = n


def run_discovery(strategy: ActiveStrategy, data: DiscoveryData, y: np.ndarray, budget: int, seed: int = 0) -> np.ndarray:
    """Play ``strategy`` for ``budget`` queries (fewer if the rows run out); the labels revealed, in order."""
    y = np.asarray(y)
    strategy.start(data, seed)
    labels = []
    for _ in range(min(budget, len(y))):
        index = strategy.select()
        label = int(y[index])
        strategy.observe(index, label)
        labels.append(label)
    return np.asarray(labels, dtype=np.int8)
