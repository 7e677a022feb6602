"""PyOD baselines behind the anomaly-gym detector interface.

Unsupervised (``fit(X)``): IForest, ECOD, COPOD, HBOS, KNN, LOF, PCA, OCSVM, CBLOF, the
PyOD AutoEncoder and DeepSVDD, the mean-rank ensemble of a detector bank, and PyOD's
ADEngine rule-based model selection (offline: no LLM client is ever passed).

Semi-supervised (``fit(X, y)`` with 1 = labelled anomaly, 0 = every other row): XGBOD
(PyOD, needs ``xgboost``), DevNet (deviation networks, Pang et al. KDD 2019) and a
class-balanced gradient-boosted classifier on the raw columns.

DevNet is implemented here rather than wrapped: ``pyod.models.devnet.DevNet`` in PyOD
3.6 passes the network's output and the labels to the deviation loss in swapped order
(the loss goes negative and the ranking is near chance), prints from ``fit``, and does
not honour its seed.

ECOD and COPOD keep PyOD's formulas but score a new row against the training rows'
empirical CDFs alone; PyOD's own ``decision_function`` recomputes the CDFs with the
scored rows included, so a row's score would depend on the rows scored alongside it.

Every wrapper keeps PyOD's defaults except where noted, clips neighbour and cluster
counts to what the training rows allow, and silences PyOD's own warnings during its calls.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from anomaly_gym.detectors._torch import resolve_device, seed_int, seeded
from anomaly_gym.detectors.base import BaseDetector
from anomaly_gym.envs.features import percentile_rank
from sklearn.base import clone

logger = logging.getLogger(__name__)

#: The bank of the mean-rank ensemble: the Featurizer's default detectors.
DEFAULT_BANK = ("iforest", "ecod", "copod", "hbos", "knn", "lof", "pca", "cblof")


@contextlib.contextmanager
def _quiet():
    """Silence PyOD's warnings and stray prints during one call."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class PyODDetector(BaseDetector):
    """Base of the PyOD wrappers: ``_build`` makes the PyOD estimator, PyOD fits and scores.

    Building and fitting run under :func:`seeded`: PyOD's deep detectors, and libsvm through
    scikit-learn, draw from the global generators; seeding them makes the fit reproducible,
    and restoring them afterwards leaves the caller's random streams as they were.

    Attributes:
        detector_: The fitted PyOD estimator.
    """

    #: The PyOD estimator is a torch model (torch is imported before seeding).
    _uses_torch = False

    def _build(self, n_rows: int, n_features: int):
        raise NotImplementedError

    def _fit(self, X, y, source) -> None:
        if self._uses_torch:
            import torch  # noqa: F401  (seeded() seeds torch only once it is imported)
        with seeded(seed_int(getattr(self, "random_state", 0))), _quiet():
            detector = self._build(*X.shape)
            detector.fit(X)
        self.detector_ = detector
        self.decision_scores_ = np.asarray(detector.decision_scores_, dtype=np.float64)

    def _decision_function(self, X):
        with _quiet():
            return self.detector_.decision_function(X)


def _neighbours(k: int, n_rows: int) -> int:
    return max(1, min(int(k), n_rows - 1))


class IForestDetector(PyODDetector):
    """Isolation forest (Liu et al. 2008), ``pyod.models.iforest.IForest``.

    Args:
        n_estimators: Number of trees.
        max_samples: Rows drawn per tree (``"auto"``: min(256, n)).
        max_features: Share (float) or number (int) of columns drawn per tree.
        random_state: Seed of the row and column draws.
    """

    def __init__(self, n_estimators: int = 100, max_samples="auto", max_features: float = 1.0, random_state: int | None = 0):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.random_state = random_state

    def _build(self, n_rows, n_features):
        from pyod.models.iforest import IForest

        return IForest(n_estimators=self.n_estimators, max_samples=self.max_samples, max_features=self.max_features, random_state=self.random_state)


class _TailProbabilityDetector(BaseDetector):
    """ECOD / COPOD scored against the training rows' empirical CDFs.

    PyOD's ``ECOD`` and ``COPOD`` score new rows by appending them to the training rows and
    recomputing every column's empirical CDF, so a row's score depends on which other rows
    are scored with it (scoring in chunks, or one row at a time, changes the scores).  Here
    each new row is placed in the training CDFs on its own, as if it were the one row
    added: ``F(x) = (#{train <= x} + 1) / (n + 1)``.  Training rows use PyOD's own
    ``#{train <= x} / n``, so ``decision_scores_`` equal PyOD's; the formulas are PyOD's.

    Attributes:
        sorted_: Every column of the training rows, sorted.
        skew_sign_: Sign of each training column's skewness (0 for a constant column).
    """

    def _fit(self, X, y, source) -> None:
        from scipy.stats import skew

        self.sorted_ = np.sort(X, axis=0)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.skew_sign_ = np.sign(np.nan_to_num(skew(X, axis=0), nan=0.0))
        self.decision_scores_ = self._score(X, training=True)

    def _decision_function(self, X):
        return self._score(X, training=False)

    method: ClassVar[str]

    def _score(self, X: np.ndarray, *, training: bool) -> np.ndarray:
        from anomaly_gym.envs.features import tail_counts, tail_outlyingness

        n = len(self.sorted_)
        at_most, at_least = tail_counts(self.sorted_, X)
        if training:
            left, right = at_most / n, at_least / n
        else:
            left, right = (at_most + 1) / (n + 1), (at_least + 1) / (n + 1)
        return tail_outlyingness(-np.log(left), -np.log(right), self.skew_sign_, self.method)


class ECODDetector(_TailProbabilityDetector):
    """Empirical-CDF outlier detection (Li et al. 2022), PyOD's formulas; no parameters.

    A row's score sums, over the columns, the largest of its left-tail, right-tail and
    skewness-chosen tail negative log-probabilities.  New rows are placed in the training
    CDFs one at a time (see :class:`_TailProbabilityDetector`).
    """

    method = "ecod"


class COPODDetector(_TailProbabilityDetector):
    """Copula-based outlier detection (Li et al. 2020), PyOD's formulas; no parameters.

    A row's score sums, over the columns, the larger of the skewness-chosen tail and the
    mean of both tails' negative log-probabilities.  New rows are placed in the training
    CDFs one at a time (see :class:`_TailProbabilityDetector`).
    """

    method = "copod"


class HBOSDetector(PyODDetector):
    """Histogram-based outlier score (Goldstein & Dengel 2012), ``pyod.models.hbos.HBOS``.

    Args:
        n_bins: Bins per column, or ``"auto"`` (Birge-Rozenblac).
        alpha: Regulariser against empty bins.
        tol: Tolerance for rows just outside a column's histogram.
    """

    def __init__(self, n_bins: int | str = 10, alpha: float = 0.1, tol: float = 0.5):
        self.n_bins = n_bins
        self.alpha = alpha
        self.tol = tol

    def _build(self, n_rows, n_features):
        from pyod.models.hbos import HBOS

        return HBOS(n_bins=self.n_bins, alpha=self.alpha, tol=self.tol)


class KNNDetector(PyODDetector):
    """Distance to the k-th (or mean of k) nearest neighbours, ``pyod.models.knn.KNN``.

    Args:
        n_neighbors: k, clipped to the number of training rows minus one.
        method: ``"largest"`` (k-th distance), ``"mean"`` or ``"median"`` of the k distances.
    """

    def __init__(self, n_neighbors: int = 5, method: str = "largest"):
        self.n_neighbors = n_neighbors
        self.method = method

    def _build(self, n_rows, n_features):
        from pyod.models.knn import KNN

        return KNN(n_neighbors=_neighbours(self.n_neighbors, n_rows), method=self.method)


class LOFDetector(PyODDetector):
    """Local outlier factor (Breunig et al. 2000), ``pyod.models.lof.LOF``.

    Args:
        n_neighbors: Neighbourhood size, clipped to the number of training rows minus one.
    """

    def __init__(self, n_neighbors: int = 20):
        self.n_neighbors = n_neighbors

    def _build(self, n_rows, n_features):
        from pyod.models.lof import LOF

        return LOF(n_neighbors=_neighbours(self.n_neighbors, n_rows))


class PCADetector(PyODDetector):
    """Weighted projection distance on the principal components, ``pyod.models.pca.PCA``.

    Args:
        n_components: Components kept (``None``: all).
        standardization: Standardise the columns first.
        random_state: Seed of the randomised SVD solver, when it is used.
    """

    def __init__(self, n_components: int | float | None = None, standardization: bool = True, random_state: int | None = 0):
        self.n_components = n_components
        self.standardization = standardization
        self.random_state = random_state

    def _build(self, n_rows, n_features):
        from pyod.models.pca import PCA

        n_components = self.n_components
        if isinstance(n_components, int):
            n_components = min(n_components, n_features, n_rows)
        return PCA(n_components=n_components, standardization=self.standardization, random_state=self.random_state)


class OCSVMDetector(PyODDetector):
    """One-class SVM (Schölkopf et al. 2001), ``pyod.models.ocsvm.OCSVM``.

    Args:
        kernel: Kernel name.
        nu: Upper bound on the share of training errors.
        gamma: Kernel coefficient (``"auto"``: 1 / n_features, PyOD's default).
    """

    def __init__(self, kernel: str = "rbf", nu: float = 0.5, gamma: str | float = "auto"):
        self.kernel = kernel
        self.nu = nu
        self.gamma = gamma

    def _build(self, n_rows, n_features):
        from pyod.models.ocsvm import OCSVM

        return OCSVM(kernel=self.kernel, nu=self.nu, gamma=self.gamma)


class CBLOFDetector(PyODDetector):
    """Cluster-based local outlier factor (He et al. 2003), ``pyod.models.cblof.CBLOF``.

    Args:
        n_clusters: Clusters, clipped to between 2 and a tenth of the training rows.
        alpha: Share of rows in the large clusters.
        beta: Size ratio separating large from small clusters.
        use_weights: Weight the score by cluster size.
        random_state: Seed of the k-means clustering.

    When PyOD cannot separate large from small clusters with these ``alpha`` / ``beta``
    (it raises), the fit is retried with fewer clusters and then relaxed splits
    (:func:`anomaly_gym.envs.features.fit_cblof`).
    """

    def __init__(self, n_clusters: int = 8, alpha: float = 0.9, beta: float = 5, use_weights: bool = False, random_state: int | None = 0):
        self.n_clusters = n_clusters
        self.alpha = alpha
        self.beta = beta
        self.use_weights = use_weights
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        from anomaly_gym.envs.features import fit_cblof

        with seeded(seed_int(self.random_state)), _quiet():
            detector = fit_cblof(X, n_clusters=self.n_clusters, alpha=self.alpha, beta=self.beta, use_weights=self.use_weights, random_state=self.random_state)
        self.n_clusters_ = detector.n_clusters
        self.detector_ = detector
        self.decision_scores_ = np.asarray(detector.decision_scores_, dtype=np.float64)


class AutoEncoderDetector(PyODDetector):
    """Reconstruction error of a fully connected autoencoder, ``pyod.models.auto_encoder.AutoEncoder``.

    Defaults are lighter than PyOD's (hidden layers of 32 and 16 units instead of 64 and
    32, batches of 64 instead of 32; PyOD's 10 epochs) so that a thousand rows fit in well
    under a second on a CPU.

    Args:
        hidden_neurons: Widths of the encoder's hidden layers (mirrored in the decoder).
        epochs: Training epochs.
        batch_size: Rows per batch.
        lr: Adam learning rate.
        dropout_rate: Dropout after each hidden layer.
        batch_norm: Batch normalisation after each hidden layer.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        random_state: Seed of the weights, dropout and batch order.
    """

    _uses_torch = True

    def __init__(
        self,
        hidden_neurons: Sequence[int] = (32, 16),
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 1e-3,
        dropout_rate: float = 0.2,
        batch_norm: bool = True,
        device: str = "auto",
        random_state: int | None = 0,
    ):
        self.hidden_neurons = hidden_neurons
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.dropout_rate = dropout_rate
        self.batch_norm = batch_norm
        self.device = device
        self.random_state = random_state

    def _build(self, n_rows, n_features):
        from pyod.models.auto_encoder import AutoEncoder

        return AutoEncoder(
            hidden_neuron_list=list(self.hidden_neurons),
            epoch_num=self.epochs,
            batch_size=min(self.batch_size, n_rows),
            lr=self.lr,
            dropout_rate=self.dropout_rate,
            batch_norm=self.batch_norm,
            device=resolve_device(self.device),
            random_state=seed_int(self.random_state),
            verbose=0,
        )


class DeepSVDDDetector(PyODDetector):
    """Deep support vector data description (Ruff et al. 2018), ``pyod.models.deep_svdd.DeepSVDD``.

    Defaults are lighter than PyOD's (20 epochs instead of 100, batches of 64 instead of 32,
    layers of 32 and 16 units, learning rate 1e-3 instead of 1e-4).  PyOD trains it on
    the CPU.

    Args:
        hidden_neurons: Widths of the network's layers; the last is the embedding.
        epochs: Training epochs.
        batch_size: Rows per batch.
        learning_rate: Adam learning rate.
        dropout_rate: Dropout after each hidden layer.
        use_ae: Train the autoencoder variant.
        random_state: Seed of the weights, dropout and batch order.
    """

    _uses_torch = True

    def __init__(
        self,
        hidden_neurons: Sequence[int] = (32, 16),
        epochs: int = 20,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        dropout_rate: float = 0.2,
        use_ae: bool = False,
        random_state: int | None = 0,
    ):
        self.hidden_neurons = hidden_neurons
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.dropout_rate = dropout_rate
        self.use_ae = use_ae
        self.random_state = random_state

    def _build(self, n_rows, n_features):
        from pyod.models.deep_svdd import DeepSVDD

        return DeepSVDD(
            n_features=n_features,
            hidden_neurons=list(self.hidden_neurons),
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            dropout_rate=self.dropout_rate,
            use_ae=self.use_ae,
            random_state=seed_int(self.random_state),
            verbose=0,
        )


# --------------------------------------------------------------------------- ensembles and selection


class MeanRankEnsemble(BaseDetector):
    """Mean percentile rank over a bank of unsupervised detectors.

    Each member's score of a row is turned into its percentile rank among that member's
    scores of the training rows (PyOD's ``decision_scores_``: for neighbour detectors a
    training row is not its own neighbour), and the ranks are averaged.  Scores are in
    [0, 1]; rows beyond every member's training range score 1.

    Args:
        detectors: Registry names (see :data:`anomaly_gym.detectors.DETECTORS`) or
            unfitted detector instances (cloned before fitting).  Members must be
            unsupervised and need no source.
        random_state: Passed to every member built from a name that takes a ``random_state``.

    Attributes:
        members_: The fitted members.
        reference_: Each member's sorted training scores, shape (n, n_members).
    """

    def __init__(self, detectors: Sequence[str | BaseDetector] = DEFAULT_BANK, random_state: int | None = 0):
        self.detectors = detectors
        self.random_state = random_state

    def _members(self) -> list[BaseDetector]:
        from anomaly_gym.detectors import make_detector

        if isinstance(self.detectors, (str, BaseDetector)) or not len(self.detectors):
            raise ValueError("detectors must be a non-empty list of detector names or instances")
        members = []
        for spec in self.detectors:
            if isinstance(spec, str):
                member = make_detector(spec)
                if "random_state" in member.get_params():
                    member.set_params(random_state=self.random_state)
            elif isinstance(spec, BaseDetector):
                member = clone(spec)
            else:
                raise TypeError(f"ensemble members must be detector names or BaseDetector instances, got {spec!r}")
            if member.requires_labels or member.uses_source:
                raise ValueError(f"{type(member).__name__} needs labels or a source; the mean-rank ensemble takes unsupervised members only")
            members.append(member)
        return members

    def _fit(self, X, y, source) -> None:
        self.members_ = [member.fit(X) for member in self._members()]
        self.reference_ = np.sort(np.column_stack([m.decision_scores_ for m in self.members_]), axis=0)
        self.decision_scores_ = self._combine([m.decision_scores_ for m in self.members_])

    def _decision_function(self, X):
        return self._combine([m.decision_function(X) for m in self.members_])

    def _combine(self, member_scores: list[np.ndarray]) -> np.ndarray:
        ranks = [percentile_rank(self.reference_[:, j], s) for j, s in enumerate(member_scores)]
        return np.mean(ranks, axis=0)


class MeanZEnsemble(BaseDetector):
    """Mean robust z-score over the featurizer's detector bank: its ``consensus/z_mean``.

    A :class:`~anomaly_gym.envs.features.Featurizer` with the named bank is fitted on the
    training rows; each member's score of a row becomes a robust z-score against the
    member's scores of the fitting rows (median and MAD), clipped at +-50 and
    log-compressed, and the members' values are averaged.  This is the ensemble the
    default monotone linear policy ends up close to (its weights on the members' z-scores
    are nearly equal), so it is the baseline that tells what meta-training adds.

    Args:
        bank: A featurizer preset (:data:`~anomaly_gym.envs.features.PRESETS`): ``"rich"``
            (the 18 detectors ``configs/default.toml`` trains on) or ``"default"`` (8).
        random_state: Seed of the featurizer's fitting subsample and randomised detectors.

    Attributes:
        featurizer_: The fitted featurizer.
    """

    #: The featurizer column that is the score.
    column = "consensus/z_mean"

    def __init__(self, bank: str = "rich", random_state: int | None = 0):
        self.bank = bank
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        import dataclasses

        from anomaly_gym.envs.features import PRESETS, Featurizer

        if self.bank not in PRESETS:
            raise ValueError(f"bank must be one of {sorted(PRESETS)}, got {self.bank!r}")
        config = dataclasses.replace(PRESETS[self.bank], seed=seed_int(self.random_state), consensus=True, agreeing=self.column.startswith("agreeing/"))
        self.featurizer_ = Featurizer(config).fit(X)
        self.column_ = config.feature_names().index(self.column)
        self.decision_scores_ = self._decision_function(X)

    def _decision_function(self, X):
        return self.featurizer_.transform(X)[:, self.column_].astype(np.float64)


class AgreeingZEnsemble(MeanZEnsemble):
    """Mean robust z-score over the agreeing half of the bank: the featurizer's ``agreeing/z_mean``.

    As :class:`MeanZEnsemble`, but only the half of the bank whose z-scores on the training
    rows correlate best with the whole bank's mean z-score is averaged: an unsupervised,
    per-dataset choice of detectors (vertical selection, as in Rayana and Akoglu's SELECT).
    It is one of the two features ``configs/default.toml``'s policy reads, used directly
    as a score: the baseline that tells what meta-training adds to it.

    Args:
        bank: A featurizer preset: ``"rich"`` (18 detectors) or ``"default"`` (8).
        random_state: Seed of the featurizer's fitting subsample and randomised detectors.

    Attributes:
        featurizer_: The fitted featurizer; ``featurizer_.agreeing_`` are the kept detectors.
    """

    column = "agreeing/z_mean"


class ADEngineDetector(BaseDetector):
    """PyOD's ADEngine picks a detector for the data by its rules; that detector scores.

    The engine profiles the training rows (size, width), plans with its bundled
    knowledge base (ADBench evidence) and builds the chosen PyOD detector.  Only rule
    routing is used: no LLM client is passed, nothing leaves the machine.  When the
    chosen detector fails to fit, the plan's alternatives are tried in order, then IForest.

    Args:
        priority: ``"speed"``, ``"balanced"`` or ``"accuracy"``.
        random_state: Seed forwarded to the chosen detector.

    Attributes:
        plan_: The engine's plan (a dict).
        detector_name_: Name of the PyOD detector that was fitted.
        detector_: The fitted PyOD detector.
    """

    def __init__(self, priority: str = "balanced", random_state: int | None = 0):
        self.priority = priority
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        try:
            from pyod.utils.ad_engine import ADEngine
        except ImportError as exc:
            raise ImportError(f"ADEngineDetector needs PyOD's ADEngine (PyOD 3); this PyOD lacks it ({exc})") from exc

        if self.priority not in ("speed", "balanced", "accuracy"):
            raise ValueError(f"priority must be 'speed', 'balanced' or 'accuracy', got {self.priority!r}")
        seed = seed_int(self.random_state)
        engine = ADEngine(random_state=seed)
        with _quiet():
            profile = engine.profile_data(X, data_type="tabular")
            plan = engine.plan_detection(profile, priority=self.priority)
        candidates = [plan] + list(plan.get("alternatives", []))
        candidates.append({"detector_name": "IForest", "params": {}})
        errors = []
        for candidate in candidates:
            name = candidate.get("detector_name")
            if not name:
                continue
            try:
                with seeded(seed), _quiet():
                    detector = engine.build_detector(candidate)
                    detector.fit(X)
            except Exception as exc:  # a failing choice falls back to the next candidate
                errors.append(f"{name}: {exc}")
                logger.warning("ADEngine's choice %s failed to fit (%s); trying the next candidate", name, exc)
                continue
            self.plan_ = {k: v for k, v in plan.items()}
            self.detector_name_ = name
            self.detector_ = detector
            self.decision_scores_ = np.asarray(detector.decision_scores_, dtype=np.float64)
            return
        raise RuntimeError("no detector of ADEngine's plan could be fitted: " + "; ".join(errors))

    def _decision_function(self, X):
        with _quiet():
            return self.detector_.decision_function(X)


# --------------------------------------------------------------------------- semi-supervised


class XGBODDetector(BaseDetector):
    """XGBOD (Zhao & Hryniewicki 2018): XGBoost on the columns plus unsupervised detector scores.

    ``pyod.models.xgbod.XGBOD``; needs the ``xgboost`` package.  The score is XGBoost's
    probability of the anomaly class.

    ``xgbod`` is the published method with PyOD's standard detector set (``bank="pyod"``:
    KNN, LOF, HBOS, IForest and OCSVM at PyOD's 41 default settings), as ADBench ran it;
    ``xgbod_compact`` (:class:`XGBODCompactDetector`) is a reduced, faster bank of 8.

    Args:
        bank: ``"pyod"`` (PyOD's standard 41 detectors; the default) or ``"compact"``
            (8 detectors: KNN k=5/15, LOF k=10/30, HBOS 10/30 bins, IForest, OCSVM).
        n_estimators: Boosting rounds.
        max_depth: Tree depth.
        learning_rate: Boosting learning rate.
        n_jobs: XGBoost threads.
        random_state: Seed of IForest and XGBoost.
    """

    requires_labels = True

    def __init__(
        self, bank: str = "pyod", n_estimators: int = 100, max_depth: int = 3, learning_rate: float = 0.1, n_jobs: int = 1, random_state: int | None = 0
    ):
        self.bank = bank
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _compact_bank(self, n_rows: int):
        from pyod.models.hbos import HBOS
        from pyod.models.iforest import IForest
        from pyod.models.knn import KNN
        from pyod.models.lof import LOF
        from pyod.models.ocsvm import OCSVM

        bank = [
            (KNN(n_neighbors=_neighbours(5, n_rows)), True),
            (KNN(n_neighbors=_neighbours(15, n_rows)), True),
            (LOF(n_neighbors=_neighbours(10, n_rows)), True),
            (LOF(n_neighbors=_neighbours(30, n_rows)), True),
            (HBOS(n_bins=10), False),
            (HBOS(n_bins=30), False),
            (IForest(n_estimators=100, random_state=self.random_state), False),
            (OCSVM(), True),
        ]
        return [d for d, _ in bank], [s for _, s in bank]

    def _fit(self, X, y, source) -> None:
        try:
            from pyod.models.xgbod import XGBOD
        except ImportError as exc:
            raise ImportError("XGBODDetector needs xgboost: pip install xgboost-cpu (or xgboost)") from exc
        if self.bank == "compact":
            estimators, flags = self._compact_bank(len(X))
        elif self.bank == "pyod":
            estimators, flags = None, None
        else:
            raise ValueError(f"bank must be 'compact' or 'pyod', got {self.bank!r}")
        seed = seed_int(self.random_state)
        detector = XGBOD(
            estimator_list=estimators,
            standardization_flag_list=flags,
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            n_jobs=self.n_jobs,
            random_state=seed,
        )
        with seeded(seed), _quiet():  # its OCSVM members draw from NumPy's global generator
            detector.fit(X, y.astype(int))
        self.detector_ = detector
        self.decision_scores_ = np.asarray(detector.decision_scores_, dtype=np.float64)

    def _decision_function(self, X):
        with _quiet():
            return self.detector_.decision_function(X)


class XGBODCompactDetector(XGBODDetector):
    """XGBOD with a reduced bank of 8 detectors (``bank="compact"``): faster, not the published set."""

    def __init__(
        self, bank: str = "compact", n_estimators: int = 100, max_depth: int = 3, learning_rate: float = 0.1, n_jobs: int = 1, random_state: int | None = 0
    ):
        super().__init__(bank=bank, n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate, n_jobs=n_jobs, random_state=random_state)


class LightGBMDetector(BaseDetector):
    """LightGBM (Ke et al., NeurIPS 2017) on the raw columns: the supervised few-label reference.

    ``lightgbm.LGBMClassifier`` with balanced class weights and leaves allowed to hold few
    rows (labelled anomalies are few); unlabelled rows count as normal, as for XGBOD and
    DevNet.  The score is its log-odds of the anomaly class.  ADGym (Jiang et al., NeurIPS
    2023) found gradient-boosted trees on the raw columns among the strongest baselines when
    few labels exist.  Needs ``pip install lightgbm``.

    Args:
        n_estimators: Boosting rounds.
        learning_rate: Boosting learning rate.
        num_leaves: Leaves per tree.
        min_child_samples: Fewest rows per leaf.
        n_jobs: Threads.
        random_state: Seed of the bagging and feature draws.
    """

    requires_labels = True

    def __init__(
        self,
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 3,
        n_jobs: int = 1,
        random_state: int | None = 0,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        try:
            from lightgbm import LGBMClassifier
        except ImportError as exc:
            raise ImportError("LightGBMDetector needs lightgbm: pip install lightgbm") from exc
        self.classifier_ = LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            class_weight="balanced",
            n_jobs=self.n_jobs,
            random_state=seed_int(self.random_state),
            verbosity=-1,
            deterministic=True,
            force_row_wise=True,
        ).fit(np.asarray(X, dtype=np.float64), y.astype(int))

    def _decision_function(self, X):
        return self.classifier_.predict(np.asarray(X, dtype=np.float64), raw_score=True)


class GradientBoostingDetector(BaseDetector):
    """A class-balanced gradient-boosted classifier on the raw columns.

    ``sklearn.ensemble.HistGradientBoostingClassifier`` with ``class_weight="balanced"``;
    the score is its log-odds of the anomaly class (no ties where probabilities saturate).

    Args:
        max_iter: Boosting rounds.
        learning_rate: Boosting learning rate.
        max_leaf_nodes: Leaves per tree.
        min_samples_leaf: Fewest rows per leaf (small: labelled anomalies are few).
        random_state: Seed of the early-stopping split (used above 10,000 rows).
    """

    requires_labels = True

    def __init__(self, max_iter: int = 100, learning_rate: float = 0.1, max_leaf_nodes: int = 31, min_samples_leaf: int = 5, random_state: int | None = 0):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.classifier_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            class_weight="balanced",
            random_state=self.random_state,
        ).fit(X, y)

    def _decision_function(self, X):
        return self.classifier_.decision_function(X)


class DevNetDetector(BaseDetector):
    """Deviation networks (Pang, Shen & van den Hengel, KDD 2019).

    A small network maps a row to a scalar score; the deviation loss pulls the scores of
    unlabelled rows towards the mean of a N(0, 1) reference (l = 5000 draws) and pushes
    labelled anomalies at least ``margin`` standard deviations above it.  Each batch is
    half labelled anomalies, half other rows, as in the paper.  Columns are standardised
    on the training rows.

    Args:
        hidden: Hidden layer widths (the paper's default network: one layer of 20).
        epochs: Training epochs.
        n_batches: Batches per epoch.
        batch_size: Rows per batch.
        lr: RMSprop learning rate.
        weight_decay: L2 penalty on the weights.
        margin: Confidence margin of the deviation loss.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; the fitted network is kept on the CPU.
        random_state: Seed of the weights, batches and reference draws.
    """

    requires_labels = True

    def __init__(
        self,
        hidden: Sequence[int] = (64,),
        epochs: int = 30,
        n_batches: int = 20,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        margin: float = 5.0,
        device: str = "auto",
        random_state: int | None = 0,
    ):
        self.hidden = hidden
        self.epochs = epochs
        self.n_batches = n_batches
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.margin = margin
        self.device = device
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        import torch
        from torch import nn

        device = resolve_device(self.device)
        seed = seed_int(self.random_state)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        Z = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32, device=device)
        anomalies = np.flatnonzero(y == 1)
        others = np.flatnonzero(y == 0)
        rng = np.random.default_rng(seed)
        half = max(1, self.batch_size // 2)
        with seeded(seed):
            layers: list[nn.Module] = []
            width = X.shape[1]
            for h in self.hidden:
                layers += [nn.Linear(width, int(h)), nn.ReLU()]
                width = int(h)
            layers.append(nn.Linear(width, 1))
            net = nn.Sequential(*layers).to(device)
            optimizer = torch.optim.RMSprop(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            generator = torch.Generator(device=device).manual_seed(seed)
            net.train()
            for _ in range(self.epochs):
                for _ in range(self.n_batches):
                    index = np.r_[rng.choice(others, size=half), rng.choice(anomalies, size=half)]
                    target = torch.as_tensor(np.r_[np.zeros(half), np.ones(half)], dtype=torch.float32, device=device)
                    optimizer.zero_grad()
                    loss = _deviation_loss(net(Z[index]).squeeze(1), target, self.margin, generator)
                    loss.backward()
                    optimizer.step()
        self.network_ = net.cpu().eval()

    def _decision_function(self, X):
        import torch

        Z = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
        with torch.no_grad():
            return self.network_(Z).squeeze(1).numpy().astype(np.float64)


def _deviation_loss(scores, labels, margin: float, generator):
    """DevNet's loss: |dev| for unlabelled rows, max(0, margin - dev) for labelled anomalies."""
    import torch

    reference = torch.randn(5000, generator=generator, device=scores.device)
    dev = (scores - reference.mean()) / reference.std()
    return torch.mean((1.0 - labels) * dev.abs() + labels * torch.clamp(margin - dev, min=0.0))
