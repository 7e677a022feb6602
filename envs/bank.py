"""The featurizer's detector bank: PyOD's formulas on scikit-learn's estimators, without PyOD.

The :class:`~anomaly_gym.envs.features.Featurizer` fits its detectors on the user's rows,
so ``anomaly-gym detect`` pays for their imports before its first scored row.  PyOD's own
classes cost far more to import than the estimators they wrap (``pyod.models.base`` loads
numba and llvmlite, ``pyod.utils.data`` sklearn's datasets, ``pyod.models.cblof`` sklearn's
estimator checks and pytest) and HBOS's numba kernel is compiled or loaded from numba's
cache in every new process.  The classes here compute what PyOD 3.6's ``fit`` and
``decision_function`` compute, on the same scikit-learn estimators with the same
arguments, and import nothing beyond numpy, SciPy and scikit-learn (lazily, on ``fit``):

==========  =================================================================================
class       PyOD's model, and what is computed
==========  =================================================================================
IForest     ``pyod.models.iforest.IForest``: minus ``IsolationForest.decision_function``.
KNN         ``pyod.models.knn.KNN``: the largest, mean or median distance to the
            ``n_neighbors`` nearest fitting rows (``NearestNeighbors``).
LOF         ``pyod.models.lof.LOF``: minus ``LocalOutlierFactor.score_samples`` (novelty).
HBOS        ``pyod.models.hbos.HBOS`` with a number of bins: per column ``np.histogram``
            (density) and ``log2(density + alpha)`` per bin, rows beyond the outer edges by
            more than ``tol`` bin widths get the column's lowest value; numpy, not numba.
PCA         ``pyod.models.pca.PCA``: ``StandardScaler`` then ``PCA``; the sum of the
            distances to the selected (smallest) components, each divided by its share of
            the variance (``scipy.spatial.distance.cdist``).
CBLOF       ``pyod.models.cblof.CBLOF``: ``KMeans``; large and small clusters split by
            ``alpha`` and ``beta``; a row in a large cluster scores its distance to its
            centre, one in a small cluster its distance to the nearest large centre.
==========  =================================================================================

The scores are PyOD's, bit for bit on the platforms tested
(``tests/envs/test_bank.py`` compares them with PyOD's own classes), so features computed
with PyOD's classes stay valid.  Each class validates its arguments where PyOD does
(``contamination`` in (0, 0.5] and HBOS's ``alpha``, ``tol`` on construction, the rest on
``fit``) and raises where PyOD's ``fit`` raises.  Unlike PyOD's, ``fit`` does not score
the fitting rows (no ``decision_scores_``, ``threshold_`` or ``labels_``): the featurizer
scores them with ``decision_function``.  Higher scores mean more anomalous.
"""

from __future__ import annotations

import abc
import math

import numpy as np

#: The scikit-learn and SciPy modules the bank's ``fit`` imports (see :func:`import_estimators`).
ESTIMATOR_MODULES = (
    "sklearn.ensemble",
    "sklearn.neighbors",
    "sklearn.decomposition",
    "sklearn.preprocessing",
    "sklearn.cluster",
    "scipy.spatial.distance",
)


#: The OpenMP runtimes loaded in this process (:func:`one_openmp_thread`), found on first use.
_OPENMP = None


def one_openmp_thread():
    """A context in which scikit-learn's OpenMP code runs on one thread.

    Which of several equally distant rows a neighbour search keeps depends on how many
    threads share the search (``ArgKmin`` merges per-thread heaps), and KMeans' sums on
    how they are split: on data with ties (integer pixels, codes) LOF's fitted state, and
    so its scores, would change with the machine's cores and ``--threads``.  The bank fits
    and scores inside this context, so a featurizer refitted from a bundle's rows gives
    the reference scores it was saved with, on any machine.
    """
    global _OPENMP
    if _OPENMP is None:  # found once: a fresh threadpoolctl scan of the loaded libraries costs milliseconds
        import sklearn.neighbors  # noqa: F401  (loads the OpenMP runtime first: a limit binds only loaded libraries)
        from threadpoolctl import ThreadpoolController

        _OPENMP = ThreadpoolController().select(user_api="openmp")
    return _OPENMP.limit(limits=1)


def import_estimators(*, without_pandas: bool = False) -> None:
    """Import what fitting the bank needs, e.g. in a worker process before its first fit.

    scikit-learn imports pandas (and with it pyarrow) whenever pandas is installed, only to
    keep a reference to it in ``sklearn.utils.fixes`` that nothing it runs here reads: about
    0.2 s and 60 MB of a fresh process.  ``without_pandas=True`` imports scikit-learn with
    pandas hidden, so that reference is None, when neither is imported yet (a command's own
    process, such as ``detect``'s); pandas imports as usual afterwards.  Leave it off in
    processes that hand pandas objects to scikit-learn.
    """
    import importlib
    import sys

    hide = without_pandas and "sklearn" not in sys.modules and "pandas" not in sys.modules
    if hide:
        sys.modules["pandas"] = None  # `import pandas` raises ImportError, which scikit-learn expects
    try:
        for name in ESTIMATOR_MODULES:
            importlib.import_module(name)
    finally:
        if hide:
            del sys.modules["pandas"]


def _check_array(X) -> np.ndarray:
    from sklearn.utils.validation import check_array

    return check_array(X)


def _check_range(value, name: str, low: float, high: float, *, include_low: bool = False, include_high: bool = False) -> None:
    """PyOD's ``check_parameter``: ``value`` inside (low, high), a bound included when asked."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} is set to {value!r}, not a number")
    above = value >= low if include_low else value > low
    below = value <= high if include_high else value < high
    if not (above and below):
        left, right = "[" if include_low else "(", "]" if include_high else ")"
        raise ValueError(f"{name} is set to {value}, not in the range {left}{low}, {high}{right}")


class _Detector(abc.ABC):
    """What every bank detector shares: PyOD's ``contamination`` argument and its check."""

    def __init__(self, contamination: float = 0.1) -> None:
        if isinstance(contamination, (int, float)) and not 0.0 < contamination <= 0.5:
            raise ValueError(f"contamination must be in (0, 0.5], got {contamination}")
        self.contamination = contamination

    @abc.abstractmethod
    def fit(self, X, y=None) -> _Detector:
        """Fit on the rows of ``X`` (``y`` is ignored, as in PyOD)."""

    @abc.abstractmethod
    def decision_function(self, X) -> np.ndarray:
        """The score of each row of ``X``: higher is more anomalous."""


class IForest(_Detector):
    """Isolation forest (PyOD's ``IForest``); the arguments are PyOD's and scikit-learn's."""

    def __init__(
        self, n_estimators=100, max_samples="auto", contamination=0.1, max_features=1.0, bootstrap=False, n_jobs=1, random_state=None, verbose=0
    ) -> None:
        super().__init__(contamination)
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None) -> IForest:
        from sklearn.ensemble import IsolationForest

        X = _check_array(X)
        self.detector_ = IsolationForest(
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            contamination=self.contamination,
            max_features=self.max_features,
            bootstrap=self.bootstrap,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
            verbose=self.verbose,
        ).fit(X)
        return self

    def decision_function(self, X) -> np.ndarray:
        return self.detector_.decision_function(_check_array(X)).ravel() * -1


class KNN(_Detector):
    """k nearest neighbours (PyOD's ``KNN``): ``method`` is ``largest``, ``mean`` or ``median``."""

    def __init__(
        self,
        contamination=0.1,
        n_neighbors=5,
        method="largest",
        radius=1.0,
        algorithm="auto",
        leaf_size=30,
        metric="minkowski",
        p=2,
        metric_params=None,
        n_jobs=1,
    ) -> None:
        super().__init__(contamination)
        self.n_neighbors = n_neighbors
        self.method = method
        self.radius = radius
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.metric = metric
        self.p = p
        self.metric_params = metric_params
        self.n_jobs = n_jobs

    def fit(self, X, y=None) -> KNN:
        from sklearn.neighbors import NearestNeighbors

        X = _check_array(X)
        if not isinstance(self.n_neighbors, (int, np.integer)) or not 0 < self.n_neighbors < len(X):
            # PyOD's fit finds each fitting row's neighbours among the others, which needs this
            raise ValueError(f"Expected 0 < n_neighbors < n_samples_fit, but n_neighbors = {self.n_neighbors}, n_samples_fit = {len(X)}")
        self.neigh_ = NearestNeighbors(
            n_neighbors=self.n_neighbors,
            radius=self.radius,
            algorithm=self.algorithm,
            leaf_size=self.leaf_size,
            metric=self.metric,
            p=self.p,
            metric_params=self.metric_params,
            n_jobs=self.n_jobs,
        ).fit(X)
        return self

    def decision_function(self, X) -> np.ndarray:
        dist, _ = self.neigh_.kneighbors(_check_array(X), n_neighbors=self.n_neighbors, return_distance=True)
        if self.method == "largest":
            return dist[:, -1].ravel()
        if self.method == "mean":
            return np.mean(dist, axis=1).ravel()
        if self.method == "median":
            return np.median(dist, axis=1).ravel()
        raise ValueError(f"method must be 'largest', 'mean' or 'median', got {self.method!r}")


class LOF(_Detector):
    """Local outlier factor (PyOD's ``LOF``, scikit-learn's in novelty mode)."""

    def __init__(
        self, n_neighbors=20, algorithm="auto", leaf_size=30, metric="minkowski", p=2, metric_params=None, contamination=0.1, n_jobs=1, novelty=True
    ) -> None:
        super().__init__(contamination)
        self.n_neighbors = n_neighbors
        self.algorithm = algorithm
        self.leaf_size = leaf_size
        self.metric = metric
        self.p = p
        self.metric_params = metric_params
        self.n_jobs = n_jobs
        self.novelty = novelty

    def fit(self, X, y=None) -> LOF:
        from sklearn.neighbors import LocalOutlierFactor

        X = _check_array(X)
        self.detector_ = LocalOutlierFactor(
            n_neighbors=self.n_neighbors,
            algorithm=self.algorithm,
            leaf_size=self.leaf_size,
            metric=self.metric,
            p=self.p,
            metric_params=self.metric_params,
            contamination=self.contamination,
            n_jobs=self.n_jobs,
            novelty=self.novelty,
        ).fit(X)
        return self

    def decision_function(self, X) -> np.ndarray:
        return self.detector_.score_samples(_check_array(X)).ravel() * -1


def hbos_column_scores(X: np.ndarray, bin_edges: np.ndarray, hist: np.ndarray, alpha: float, tol: float) -> np.ndarray:
    """Per row and column, HBOS's ``log2(density + alpha)`` of the row's bin (PyOD's
    ``_calculate_outlier_scores``, in numpy): shape (n, d).

    ``bin_edges`` (n_bins + 1, d) and ``hist`` (n_bins, d) are the columns' histograms.  A
    value on a bin's upper edge belongs to that bin; one below the lowest edge or above
    the highest by at most ``tol`` bin widths gets the outer bin's value, one further out
    the column's lowest value.  The logarithms are ``math.log2`` (the C library's, as
    numba's), the comparisons and arithmetic are PyOD's: the same values bit for bit.
    """
    X = np.asarray(X, dtype=np.float64)
    n_bins = hist.shape[0]
    out = np.empty(X.shape)
    for i in range(X.shape[1]):
        edges = bin_edges[:, i]
        log_density = np.array([math.log2(h + alpha) for h in hist[:, i].tolist()])
        ind = np.searchsorted(edges, X[:, i], side="left")  # np.digitize(x, edges, right=True)
        col = log_density[np.clip(ind - 1, 0, n_bins - 1)]
        lowest = log_density.min()
        below, above = ind == 0, ind == n_bins + 1
        near_below = (edges[0] - X[:, i]) <= (edges[1] - edges[0]) * tol
        near_above = (X[:, i] - edges[-1]) <= (edges[-1] - edges[-2]) * tol
        col[below] = np.where(near_below[below], log_density[0], lowest)
        col[above] = np.where(near_above[above], log_density[n_bins - 1], lowest)
        out[:, i] = col
    return out


class HBOS(_Detector):
    """Histogram-based outlier score (PyOD's ``HBOS``) with a fixed number of bins (> 2)."""

    def __init__(self, n_bins=10, alpha=0.1, tol=0.5, contamination=0.1) -> None:
        super().__init__(contamination)
        _check_range(alpha, "alpha", 0, 1)
        _check_range(tol, "tol", 0, 1)
        self.n_bins = n_bins
        self.alpha = alpha
        self.tol = tol

    def _check_bins(self) -> int:
        if isinstance(self.n_bins, str):
            raise ValueError("this HBOS takes a number of bins; PyOD's HBOS chooses them with n_bins='auto'")
        _check_range(self.n_bins, "n_bins", 2, np.inf)
        return int(self.n_bins)

    def fit(self, X, y=None) -> HBOS:
        X = _check_array(X)
        n_bins = self._check_bins()
        hist = np.zeros([n_bins, X.shape[1]])
        edges = np.zeros([n_bins + 1, X.shape[1]])
        for i in range(X.shape[1]):
            hist[:, i], edges[:, i] = np.histogram(X[:, i], bins=n_bins, density=True)
            if not np.isclose(1, np.sum(hist[:, i] * np.diff(edges[:, i])), atol=0.1):
                raise ValueError(f"the histogram of column {i} does not integrate to 1 (its range overflows)")
        self.hist_, self.bin_edges_ = hist, edges
        return self

    def decision_function(self, X) -> np.ndarray:
        self._check_bins()
        scores = hbos_column_scores(_check_array(X), self.bin_edges_, self.hist_, self.alpha, self.tol)
        return np.sum(scores, axis=1).ravel() * -1


class PCA(_Detector):
    """Principal component analysis (PyOD's ``PCA``): the weighted distances of a row to
    the ``n_selected_components`` smallest components of the standardised fitting rows."""

    def __init__(
        self,
        n_components=None,
        n_selected_components=None,
        contamination=0.1,
        copy=True,
        whiten=False,
        svd_solver="auto",
        tol=0.0,
        iterated_power="auto",
        random_state=None,
        weighted=True,
        standardization=True,
    ) -> None:
        super().__init__(contamination)
        self.n_components = n_components
        self.n_selected_components = n_selected_components
        self.copy = copy
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.tol = tol
        self.iterated_power = iterated_power
        self.random_state = random_state
        self.weighted = weighted
        self.standardization = standardization

    def fit(self, X, y=None) -> PCA:
        from sklearn.decomposition import PCA as SklearnPCA
        from sklearn.preprocessing import StandardScaler

        X = _check_array(X)
        if self.standardization:
            self.scaler_ = StandardScaler().fit(X)
            X = self.scaler_.transform(X)
        self.detector_ = SklearnPCA(
            n_components=self.n_components,
            copy=self.copy,
            whiten=self.whiten,
            svd_solver=self.svd_solver,
            tol=self.tol,
            iterated_power=self.iterated_power,
            random_state=self.random_state,
        ).fit(X)
        self.n_components_ = self.detector_.n_components_
        self.components_ = self.detector_.components_
        selected = self.n_components_ if self.n_selected_components is None else self.n_selected_components
        _check_range(selected, "n_selected_components_", 1, self.n_components_, include_low=True, include_high=True)
        self.n_selected_components_ = selected
        self.w_components_ = self.detector_.explained_variance_ratio_ if self.weighted else np.ones([self.n_components_])
        self.selected_components_ = self.components_[-1 * selected :, :]
        self.selected_w_components_ = self.w_components_[-1 * selected :]
        return self

    @property
    def explained_variance_ratio_(self) -> np.ndarray:
        return self.detector_.explained_variance_ratio_

    def decision_function(self, X) -> np.ndarray:
        from scipy.spatial.distance import cdist

        X = _check_array(X)
        if self.standardization:
            X = self.scaler_.transform(X)
        return np.sum(cdist(X, self.selected_components_) / self.selected_w_components_, axis=1).ravel()


def paired_distances(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of ``X`` to the same row of ``Y``, the squares summed
    column by column from the first (as PyOD's numba ``pairwise_distances_no_broadcast``)."""
    acc = np.zeros(len(X))
    for j in range(X.shape[1]):
        diff = Y[:, j] - X[:, j]
        acc += diff * diff
    return np.sqrt(acc)


class CBLOF(_Detector):
    """Cluster-based local outlier factor (PyOD's ``CBLOF``) on scikit-learn's ``KMeans``
    (or ``clustering_estimator``).  ``n_jobs`` is PyOD's (it has no effect there either)."""

    def __init__(
        self,
        n_clusters=8,
        contamination=0.1,
        clustering_estimator=None,
        alpha=0.9,
        beta=5,
        use_weights=False,
        check_estimator=False,
        random_state=None,
        n_jobs=1,
    ) -> None:
        super().__init__(contamination)
        self.n_clusters = n_clusters
        self.clustering_estimator = clustering_estimator
        self.alpha = alpha
        self.beta = beta
        self.use_weights = use_weights
        self.check_estimator = check_estimator
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X, y=None) -> CBLOF:
        X = _check_array(X)
        _check_range(self.alpha, "alpha", 0, 1)
        _check_range(self.beta, "beta", 1, np.iinfo(np.int32).max)
        if self.clustering_estimator is not None:
            self.clustering_estimator_ = self.clustering_estimator
        else:
            from sklearn.cluster import KMeans

            self.clustering_estimator_ = KMeans(n_clusters=self.n_clusters, random_state=self.random_state)
        if self.check_estimator:
            from sklearn.utils.estimator_checks import check_estimator

            check_estimator(self.clustering_estimator_)
        self.clustering_estimator_.fit(X=X, y=y)
        self.cluster_labels_ = self.clustering_estimator_.labels_
        self.cluster_sizes_ = np.bincount(self.cluster_labels_)
        self.n_clusters_ = self.cluster_sizes_.shape[0]
        if hasattr(self.clustering_estimator_, "cluster_centers_"):
            self.cluster_centers_ = self.clustering_estimator_.cluster_centers_
        else:
            self.cluster_centers_ = np.zeros([self.n_clusters_, X.shape[1]])
            for i in range(self.n_clusters_):
                self.cluster_centers_[i, :] = np.mean(X[np.where(self.cluster_labels_ == i)], axis=0)
        self._split_clusters(len(X))
        return self

    def _split_clusters(self, n_samples: int) -> None:
        """The large clusters: the fewest biggest holding ``alpha`` of the rows, or ending
        where the next is ``beta`` times smaller (PyOD's rule; raises when neither exists)."""
        sizes = np.bincount(self.cluster_labels_)
        order = np.argsort(sizes * -1)
        alpha_list, beta_list = [], []
        for i in range(1, self.n_clusters_):
            if np.sum(sizes[order[:i]]) >= n_samples * self.alpha:
                alpha_list.append(i)
            if sizes[order[i - 1]] / sizes[order[i]] >= self.beta:
                beta_list.append(i)
        both = np.intersect1d(alpha_list, beta_list)
        if len(both) > 0:
            threshold = both[0]
        elif alpha_list or beta_list:
            threshold = (alpha_list or beta_list)[0]
        else:
            raise ValueError("Could not form valid cluster separation. Please change n_clusters or change clustering method")
        self.small_cluster_labels_ = order[threshold:]
        self.large_cluster_labels_ = order[0:threshold]
        self.large_cluster_centers_ = self.cluster_centers_[self.large_cluster_labels_]

    def decision_function(self, X) -> np.ndarray:
        from scipy.spatial.distance import cdist

        X = _check_array(X)
        labels = self.clustering_estimator_.predict(X)
        scores = np.zeros([X.shape[0]])
        small = np.where(np.isin(labels, self.small_cluster_labels_))[0]
        large = np.where(np.isin(labels, self.large_cluster_labels_))[0]
        if small.shape[0] != 0:
            scores[small] = np.min(cdist(X[small, :], self.large_cluster_centers_), axis=1)
        if large.shape[0] != 0:
            scores[large] = paired_distances(X[large, :], self.cluster_centers_[labels[large]])
        if self.use_weights:
            scores = scores * self.cluster_sizes_[labels]
        return scores.ravel()
