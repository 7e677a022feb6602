"""Transfer-clustering baselines: learn normal structure on source datasets, score a target.

Every detector here takes ``source=(X_source, y_source)`` in ``fit`` (one or several
source datasets, see :func:`anomaly_gym.detectors.base.check_source`); **without a
source, ``fit`` raises ``ValueError``** — there is nothing to transfer from, and a
silent fallback would pass a plain clustering detector off as a transfer result.

The shared feature space (``feature_space``):

- ``"raw"``: the columns themselves; every source must have the target's width.
- ``"features"``: the transferable features of :class:`~anomaly_gym.envs.features.Featurizer`,
  with a featurizer fitted on each dataset's own rows (each source's, and the target's) and
  each dataset transformed by its own featurizer, so every row is described relative to
  the dataset it comes from.
- ``"auto"`` (default): ``"raw"`` when every source has the target's number of columns,
  else ``"features"``.

Where a source has labels, only its normal rows (``y == 0``) shape the clusters.
Apart from :class:`FeatureTransferKMeans` (the no-adaptation baseline, which scales the
target with the source's statistics), each dataset is standardised with its own robust
statistics (median, IQR) in the shared space.

The target is unlabelled and contaminated, so whatever is estimated on it is trimmed:
the share ``trim`` of target rows farthest from the current model is left out of each
k-means step (trimmed k-means, Cuesta-Albertos et al. 1997), of CORAL's covariance (a few
MCD-style concentration steps) and of the deep model's fine-tuning loss.  Without the
trimming, a cluster settles on the anomalies themselves as soon as they are grouped (in
the ``"features"`` space, where all of a dataset's anomalies share high percentile ranks,
they always are) and the ranking inverts.  Set ``trim=0`` for the untrimmed methods.

Known limit: trimming reduces but does not remove that effect.  In the ``"features"``
space, centroids estimated on rows that include grouped anomalies (an unlabelled source,
or the target during :class:`ModelTransferKMeans`' fine-tuning and
:class:`PrototypeMetaClustering`'s refinement) can still sit on them.  Give the sources'
labels where they exist, so that their anomalies are left out.

Scores are distances: higher = more anomalous.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from anomaly_gym.detectors._torch import resolve_device, seed_int, seeded
from anomaly_gym.detectors.base import BaseDetector, SourceData, check_X
from anomaly_gym.envs.features import Featurizer, FeaturizerConfig
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError
from sklearn.metrics import pairwise_distances_argmin_min
from sklearn.preprocessing import RobustScaler

FEATURE_SPACES = ("auto", "raw", "features")

#: The featurizer of the ``"features"`` space when none is given: the default bank,
#: without the dataset-level descriptors (constant within a dataset, they would only
#: offset every target row from the source clusters).
DEFAULT_TRANSFER_FEATURIZER = FeaturizerConfig(descriptors=False)


class TransferDetector(BaseDetector):
    """Base of the transfer baselines: builds the shared feature space.

    Attributes:
        feature_space_: ``"raw"`` or ``"features"``, as resolved in ``fit``.
        target_featurizer_: The featurizer fitted on the target rows (``"features"`` space),
            else ``None``.
    """

    uses_source = True

    def _shared_space(self, X: np.ndarray, sources: list[SourceData]) -> tuple[list[np.ndarray], np.ndarray]:
        """Resolve the space; return each source's normal rows and the target rows in it."""
        labelled, Zt = self._shared_space_labelled(X, sources)
        return [_normal_rows(Zs, ys, i) for i, (Zs, ys) in enumerate(labelled)], Zt

    def _shared_space_labelled(self, X: np.ndarray, sources: list[SourceData]) -> tuple[list[SourceData], np.ndarray]:
        """Resolve the space; return every source's rows in it with their labels, and the target rows."""
        space = getattr(self, "feature_space", "auto")
        if space not in FEATURE_SPACES:
            raise ValueError(f"feature_space must be one of {FEATURE_SPACES}, got {space!r}")
        same_width = all(Xs.shape[1] == X.shape[1] for Xs, _ in sources)
        if space == "auto":
            space = "raw" if same_width else "features"
        if space == "raw" and not same_width:
            widths = sorted({Xs.shape[1] for Xs, _ in sources})
            raise ValueError(
                f"feature_space='raw' needs every source to have the target's {X.shape[1]} columns, got {widths}; "
                "use feature_space='features' (or 'auto') to transfer through dataset-relative features"
            )
        self.feature_space_ = space
        self.target_featurizer_ = None
        source_rows = [(self._featurize(Xs) if space == "features" else Xs, ys) for Xs, ys in sources]
        if space == "features":
            self.target_featurizer_ = self._new_featurizer().fit(X)
            Zt = self.target_featurizer_.transform(X).astype(np.float64)
        else:
            Zt = X
        return source_rows, Zt

    def _to_space(self, X: np.ndarray) -> np.ndarray:
        """Target rows in the shared space (the target's own featurizer, or the columns)."""
        if self.target_featurizer_ is None:
            return X
        return self.target_featurizer_.transform(X).astype(np.float64)

    def _new_featurizer(self) -> Featurizer:
        config = getattr(self, "featurizer", None)
        if config is None:
            config = DEFAULT_TRANSFER_FEATURIZER
        if not isinstance(config, FeaturizerConfig):
            raise TypeError(f"featurizer must be a FeaturizerConfig or None, got {type(config).__name__}")
        return Featurizer(config)

    def _featurize(self, X: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return self._new_featurizer().fit_transform(X).astype(np.float64)


def _normal_rows(Z: np.ndarray, y: np.ndarray | None, index: int) -> np.ndarray:
    """The rows labelled 0 when labels are given (all rows when too few are)."""
    if y is None:
        return Z
    normal = Z[y == 0]
    if len(normal) < 2:
        warnings.warn(f"source dataset {index} has fewer than 2 rows labelled normal; all its rows are used", RuntimeWarning, stacklevel=5)
        return Z
    return normal


def _scaler(Z: np.ndarray) -> RobustScaler:
    """Median / IQR scaler, scaled so that Gaussian columns get unit variance."""
    return RobustScaler(unit_variance=True).fit(Z)


def _check_trim(trim: float) -> None:
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim!r}")


def _kmeans(Z: np.ndarray, n_clusters: int, seed: int, sample_weight=None) -> np.ndarray:
    """Cluster centres of seeded k-means, with ``n_clusters`` clipped to the distinct rows."""
    k = max(1, min(int(n_clusters), len(np.unique(Z, axis=0))))
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(Z, sample_weight=sample_weight)
    return model.cluster_centers_


def lloyd_steps(Z: np.ndarray, centers: np.ndarray, n_steps: int, trim: float = 0.0) -> np.ndarray:
    """Up to ``n_steps`` (trimmed) k-means steps on ``Z`` starting from ``centers``.

    Each step assigns every row to its nearest centre, leaves out the share ``trim`` of rows
    farthest from their centre, and moves each centre to the mean of its remaining rows; a
    centre left with no row stays where it is.  Stops early once no centre moves.
    """
    centers = np.array(centers, dtype=np.float64, copy=True)
    for _ in range(int(n_steps)):
        labels, dist = pairwise_distances_argmin_min(Z, centers)
        keep = _kept(dist, trim)
        new = centers.copy()
        for k in range(len(centers)):
            members = Z[keep & (labels == k)]
            if len(members):
                new[k] = members.mean(axis=0)
        if np.allclose(new, centers):
            break
        centers = new
    return centers


def _kept(values: np.ndarray, trim: float) -> np.ndarray:
    """Mask of the ``1 - trim`` share of smallest values."""
    if trim <= 0:
        return np.ones(len(values), dtype=bool)
    n_keep = max(1, int(np.ceil((1.0 - trim) * len(values))))
    keep = np.zeros(len(values), dtype=bool)
    keep[np.argsort(values, kind="stable")[:n_keep]] = True
    return keep


def trimmed_mean_cov(Z: np.ndarray, trim: float, n_steps: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the ``1 - trim`` share of rows closest to the bulk.

    Starts from the rows nearest the coordinate-wise median and runs concentration steps
    (as in FastMCD): keep the rows of smallest Mahalanobis distance, re-estimate.  No
    consistency correction: callers compare two estimates trimmed alike.  ``trim=0`` gives
    the plain mean and covariance.
    """
    if trim <= 0:
        return Z.mean(axis=0), np.atleast_2d(np.cov(Z, rowvar=False))
    keep = _kept(np.linalg.norm(Z - np.median(Z, axis=0), axis=1), trim)
    for _ in range(n_steps):
        mean = Z[keep].mean(axis=0)
        cov = np.atleast_2d(np.cov(Z[keep], rowvar=False))
        ridge = 1e-9 * max(float(np.mean(np.diag(cov))), 1e-12)
        centred = Z - mean
        d2 = np.einsum("ij,ij->i", centred @ np.linalg.pinv(cov + ridge * np.eye(len(cov))), centred)
        new_keep = _kept(d2, trim)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return Z[keep].mean(axis=0), np.atleast_2d(np.cov(Z[keep], rowvar=False))


def nearest_distance(Z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of ``Z`` to its nearest centre."""
    return pairwise_distances_argmin_min(Z, centers)[1]


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class FeatureTransferKMeans(TransferDetector):
    """Feature transfer without adaptation: a scaler and k-means fitted on the source.

    The pooled source rows fix a robust scaler and ``n_clusters`` centroids; a target row
    is scaled with the *source's* statistics and scored by its distance to the nearest
    source centroid.  Nothing is estimated on the target (except its featurizer in the
    ``"features"`` space).

    Args:
        n_clusters: Source clusters.
        feature_space: ``"auto"``, ``"raw"`` or ``"features"`` (see the module docstring).
        featurizer: Featurizer configuration of the ``"features"`` space (``None``: the
            default bank without dataset descriptors).
        random_state: Seed of k-means.

    Attributes:
        scaler_: Robust scaler fitted on the pooled source rows.
        cluster_centers_: Source centroids in the scaled shared space.
    """

    def __init__(self, n_clusters: int = 8, feature_space: str = "auto", featurizer: FeaturizerConfig | None = None, random_state: int | None = 0):
        self.n_clusters = n_clusters
        self.feature_space = feature_space
        self.featurizer = featurizer
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        _check_positive(n_clusters=self.n_clusters)
        source_rows, _ = self._shared_space(X, source)
        pooled = np.vstack(source_rows)
        self.scaler_ = _scaler(pooled)
        self.cluster_centers_ = _kmeans(self.scaler_.transform(pooled), self.n_clusters, seed_int(self.random_state))

    def _decision_function(self, X):
        return nearest_distance(self.scaler_.transform(self._to_space(X)), self.cluster_centers_)


class ModelTransferKMeans(TransferDetector):
    """Model transfer: k-means initialised at the source centroids, fine-tuned on the target.

    The source centroids (k-means on the pooled, per-dataset standardised source rows) start
    up to ``fine_tune_steps`` trimmed Lloyd steps on the standardised target rows; a target
    row is scored by its distance to the nearest fine-tuned centroid.

    Args:
        n_clusters: Clusters.
        fine_tune_steps: Lloyd steps on the target (stops early once the centroids settle).
        trim: Share of target rows, the farthest from their centroid, left out of each step.
        feature_space: ``"auto"``, ``"raw"`` or ``"features"``.
        featurizer: Featurizer configuration of the ``"features"`` space.
        random_state: Seed of the source k-means.

    Attributes:
        source_centers_: Centroids learned on the source (the fine-tuning's start).
        cluster_centers_: Centroids after fine-tuning on the target.
        target_scaler_: Robust scaler fitted on the target rows.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        fine_tune_steps: int = 20,
        trim: float = 0.1,
        feature_space: str = "auto",
        featurizer: FeaturizerConfig | None = None,
        random_state: int | None = 0,
    ):
        self.n_clusters = n_clusters
        self.fine_tune_steps = fine_tune_steps
        self.trim = trim
        self.feature_space = feature_space
        self.featurizer = featurizer
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        _check_positive(n_clusters=self.n_clusters)
        if self.fine_tune_steps < 0:
            raise ValueError(f"fine_tune_steps must be >= 0, got {self.fine_tune_steps}")
        _check_trim(self.trim)
        source_rows, Zt = self._shared_space(X, source)
        pooled = np.vstack([_scaler(Z).transform(Z) for Z in source_rows])
        self.source_centers_ = _kmeans(pooled, self.n_clusters, seed_int(self.random_state))
        self.target_scaler_ = _scaler(Zt)
        self.cluster_centers_ = lloyd_steps(self.target_scaler_.transform(Zt), self.source_centers_, self.fine_tune_steps, self.trim)

    def _decision_function(self, X):
        return nearest_distance(self.target_scaler_.transform(self._to_space(X)), self.cluster_centers_)


def _sqrtm(C: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Symmetric (inverse) square root of a symmetric positive definite matrix."""
    w, V = np.linalg.eigh(C)
    w = np.clip(w, 1e-12, None)
    return (V * (w ** (-0.5 if inverse else 0.5))) @ V.T


class CORALKMeans(TransferDetector):
    """CORAL alignment (Sun, Feng & Saenko, AAAI 2016), then distance to source clusters.

    In the source's robustly scaled coordinates, the target rows are centred, whitened with
    their own covariance and re-coloured with the source's:
    ``T_aligned = (T - mean_T) C_T^{-1/2} C_S^{1/2} + mean_S``, where each
    ``C = cov + reg * mean(diag(cov)) * I``.  (CORAL as published re-colours the source to
    the target and retrains on it; aligning the target to the source is the mirror image
    and lets the source clusters stay fixed.)  A target row is scored by its aligned
    distance to the nearest source centroid.

    Means and covariances of both domains are estimated on the ``1 - trim`` share of rows
    closest to the bulk (:func:`trimmed_mean_cov`), alike for both, so that the target's
    anomalies do not take part in the alignment.

    Args:
        n_clusters: Source clusters.
        reg: Ridge added to both covariances, relative to their mean variance.  The paper
            adds the identity to covariances of raw features; here the columns are
            scaled first, so a small ridge is enough.
        trim: Share of rows left out of the mean and covariance estimates.
        feature_space: ``"auto"``, ``"raw"`` or ``"features"``.
        featurizer: Featurizer configuration of the ``"features"`` space.
        random_state: Seed of the source k-means.

    Attributes:
        scaler_: Robust scaler of the pooled source rows.
        source_mean_ / target_mean_: Means in the source's scaled coordinates.
        transform_matrix_: ``C_T^{-1/2} C_S^{1/2}``.
        cluster_centers_: Source centroids in the source's scaled coordinates.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        reg: float = 1e-3,
        trim: float = 0.2,
        feature_space: str = "auto",
        featurizer: FeaturizerConfig | None = None,
        random_state: int | None = 0,
    ):
        self.n_clusters = n_clusters
        self.reg = reg
        self.trim = trim
        self.feature_space = feature_space
        self.featurizer = featurizer
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        _check_positive(n_clusters=self.n_clusters)
        _check_trim(self.trim)
        if not self.reg > 0:
            raise ValueError(f"reg must be positive (it keeps the covariances invertible), got {self.reg}")
        source_rows, Zt = self._shared_space(X, source)
        pooled = np.vstack(source_rows)
        self.scaler_ = _scaler(pooled)
        S = self.scaler_.transform(pooled)
        T = self.scaler_.transform(Zt)
        self.source_mean_, C_s = trimmed_mean_cov(S, self.trim)
        self.target_mean_, C_t = trimmed_mean_cov(T, self.trim)
        self.transform_matrix_ = _sqrtm(self._regularise(C_t), inverse=True) @ _sqrtm(self._regularise(C_s))
        self.cluster_centers_ = _kmeans(S, self.n_clusters, seed_int(self.random_state))

    def _regularise(self, C: np.ndarray) -> np.ndarray:
        ridge = self.reg * max(float(np.mean(np.diag(C))), 1e-12)
        return C + ridge * np.eye(len(C))

    def _align(self, X: np.ndarray) -> np.ndarray:
        T = self.scaler_.transform(self._to_space(X))
        return (T - self.target_mean_) @ self.transform_matrix_ + self.source_mean_

    def transform(self, X) -> np.ndarray:
        """Target rows aligned to the source, in the source's original shared-space units."""
        if not hasattr(self, "transform_matrix_"):
            raise NotFittedError("this CORALKMeans is not fitted yet; call fit(X, source=...) first")
        X = check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} columns but CORALKMeans was fitted on {self.n_features_in_}")
        return self.scaler_.inverse_transform(self._align(X))

    def _decision_function(self, X):
        return nearest_distance(self._align(X), self.cluster_centers_)


class PrototypeMetaClustering(TransferDetector):
    """Prototypes of normal structure learned across source tasks, refined on the target.

    Each source task (standardised with its own statistics, normal rows only) is clustered
    into ``clusters_per_task`` centroids; the centroids of all tasks are clustered again
    into ``n_prototypes`` prototypes, weighted so that every task counts equally whatever
    its size.  On the target, ``refine_steps`` trimmed Lloyd steps move the prototypes to
    the standardised target rows; a row is scored by its distance to the nearest prototype.

    Args:
        n_prototypes: Prototypes.
        clusters_per_task: Centroids per source task.
        refine_steps: Lloyd steps on the target.
        trim: Share of target rows, the farthest from their prototype, left out of each step.
        feature_space: ``"auto"``, ``"raw"`` or ``"features"``.
        featurizer: Featurizer configuration of the ``"features"`` space.
        random_state: Seed of the k-means runs.

    Attributes:
        prototypes_: Prototypes learned on the sources.
        cluster_centers_: Prototypes after refinement on the target.
        target_scaler_: Robust scaler fitted on the target rows.
    """

    def __init__(
        self,
        n_prototypes: int = 8,
        clusters_per_task: int = 8,
        refine_steps: int = 3,
        trim: float = 0.1,
        feature_space: str = "auto",
        featurizer: FeaturizerConfig | None = None,
        random_state: int | None = 0,
    ):
        self.n_prototypes = n_prototypes
        self.clusters_per_task = clusters_per_task
        self.refine_steps = refine_steps
        self.trim = trim
        self.feature_space = feature_space
        self.featurizer = featurizer
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        _check_positive(n_prototypes=self.n_prototypes, clusters_per_task=self.clusters_per_task)
        if self.refine_steps < 0:
            raise ValueError(f"refine_steps must be >= 0, got {self.refine_steps}")
        _check_trim(self.trim)
        seed = seed_int(self.random_state)
        source_rows, Zt = self._shared_space(X, source)
        centers, weights = [], []
        for Z in source_rows:
            Z = _scaler(Z).transform(Z)
            task_centers = _kmeans(Z, self.clusters_per_task, seed)
            labels, _ = pairwise_distances_argmin_min(Z, task_centers)
            share = np.bincount(labels, minlength=len(task_centers)) / len(Z)
            centers.append(task_centers)
            weights.append(share / len(source_rows))
        centers, weights = np.vstack(centers), np.concatenate(weights)
        keep = weights > 0
        self.prototypes_ = _kmeans(centers[keep], self.n_prototypes, seed, sample_weight=weights[keep])
        self.target_scaler_ = _scaler(Zt)
        self.cluster_centers_ = lloyd_steps(self.target_scaler_.transform(Zt), self.prototypes_, self.refine_steps, self.trim)

    def _decision_function(self, X):
        return nearest_distance(self.target_scaler_.transform(self._to_space(X)), self.cluster_centers_)


# --------------------------------------------------------------------------- deep transfer clustering


def gaussian_mmd(a, b, bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)):
    """Biased squared MMD between two batches with a sum of Gaussian kernels.

    The kernel widths are ``bandwidths`` times the median pairwise squared distance of the
    pooled batch (detached: the scale does not take gradients).
    """
    import torch

    pooled = torch.cat([a, b])
    d2 = torch.cdist(pooled, pooled).pow(2)
    scale = d2.detach().median().clamp_min(1e-6)
    kernel = sum(torch.exp(-d2 / (scale * w)) for w in bandwidths)
    n = len(a)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def _robust_standardise(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    med = np.median(reference)
    spread = np.percentile(reference, 75) - np.percentile(reference, 25)
    if spread <= 1e-12:
        spread = reference.std() if reference.std() > 1e-12 else 1.0
    return (values - med) / spread


class DeepTransferClustering(TransferDetector):
    """Deep transfer clustering (in the spirit of DTC): an autoencoder shared by source and target.

    1. A small autoencoder is pretrained on the (per-dataset standardised) source rows.
    2. It is fine-tuned on target and source batches together: reconstruction error of both
       plus ``mmd_weight`` times the MMD between source and target latent codes, which pulls
       the target's codes onto the source's.  In every batch the share ``trim`` of rows
       reconstructed worst is left out of the loss (of both terms), so the model does not
       learn to reconstruct the anomalies.
    3. k-means on the source's latent codes gives ``n_clusters`` latent centroids.

    A target row's score is ``recon_weight`` times its reconstruction error plus
    ``1 - recon_weight`` times its latent distance to the nearest centroid, each robustly
    standardised (median / IQR) on the target's training rows.  The network is small: a
    thousand rows train in about a second on a CPU core.  Training runs on ``device``; the
    fitted network is kept on the CPU.

    Args:
        latent_dim: Width of the latent code.
        hidden: Width of the hidden layer of encoder and decoder.
        n_clusters: Latent clusters.
        pretrain_epochs: Epochs on the source.
        finetune_epochs: Epochs on the target (with the source and the MMD term).
        mmd_weight: Weight of the MMD alignment term.
        recon_weight: Share of the reconstruction error in the score (0..1).
        trim: Share of each batch's worst-reconstructed rows left out of the loss.
        lr: Adam learning rate.
        batch_size: Rows per batch (of each domain).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        feature_space: ``"auto"``, ``"raw"`` or ``"features"``.
        featurizer: Featurizer configuration of the ``"features"`` space.
        random_state: Seed of the weights, batches and k-means.

    Attributes:
        network_: The fine-tuned autoencoder (``encoder`` and ``decoder`` modules).
        cluster_centers_: Latent centroids.
        target_scaler_: Robust scaler fitted on the target rows.
        recon_reference_ / distance_reference_: The target training rows' reconstruction
            errors and latent distances, the reference of the robust standardisation.
    """

    def __init__(
        self,
        latent_dim: int = 8,
        hidden: int = 64,
        n_clusters: int = 8,
        pretrain_epochs: int = 30,
        finetune_epochs: int = 20,
        mmd_weight: float = 1.0,
        recon_weight: float = 0.5,
        trim: float = 0.1,
        lr: float = 1e-3,
        batch_size: int = 128,
        device: str = "auto",
        feature_space: str = "auto",
        featurizer: FeaturizerConfig | None = None,
        random_state: int | None = 0,
    ):
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.n_clusters = n_clusters
        self.pretrain_epochs = pretrain_epochs
        self.finetune_epochs = finetune_epochs
        self.mmd_weight = mmd_weight
        self.recon_weight = recon_weight
        self.trim = trim
        self.lr = lr
        self.batch_size = batch_size
        self.device = device
        self.feature_space = feature_space
        self.featurizer = featurizer
        self.random_state = random_state

    def _fit(self, X, y, source) -> None:
        import torch
        from torch import nn

        _check_positive(latent_dim=self.latent_dim, hidden=self.hidden, n_clusters=self.n_clusters, batch_size=self.batch_size)
        if not 0.0 <= self.recon_weight <= 1.0:
            raise ValueError(f"recon_weight must be in [0, 1], got {self.recon_weight}")
        if self.pretrain_epochs < 0 or self.finetune_epochs < 0:
            raise ValueError("pretrain_epochs and finetune_epochs must be >= 0")
        _check_trim(self.trim)
        device = resolve_device(self.device)
        seed = seed_int(self.random_state)
        source_rows, Zt = self._shared_space(X, source)
        Zs = np.vstack([_scaler(Z).transform(Z) for Z in source_rows])
        self.target_scaler_ = _scaler(Zt)
        Zt = self.target_scaler_.transform(Zt)
        S = torch.as_tensor(Zs, dtype=torch.float32, device=device)
        T = torch.as_tensor(Zt, dtype=torch.float32, device=device)
        d = Zt.shape[1]
        with seeded(seed):
            net = nn.ModuleDict(
                {
                    "encoder": nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.latent_dim)),
                    "decoder": nn.Sequential(nn.Linear(self.latent_dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, d)),
                }
            ).to(device)
            optimizer = torch.optim.Adam(net.parameters(), lr=self.lr)
            generator = torch.Generator(device="cpu").manual_seed(seed)

            def trimmed(batch):
                """Codes and mean reconstruction error of the rows kept after trimming."""
                codes = net["encoder"](batch)
                error = (net["decoder"](codes) - batch).pow(2).mean(dim=1)
                n_keep = max(2, int(np.ceil((1.0 - self.trim) * len(batch))))
                kept = torch.argsort(error.detach())[:n_keep]
                return codes[kept], error[kept].mean()

            net.train()
            for _ in range(self.pretrain_epochs):
                for index in _batches(len(S), self.batch_size, generator):
                    optimizer.zero_grad()
                    _, loss = trimmed(S[index])
                    loss.backward()
                    optimizer.step()
            for _ in range(self.finetune_epochs):
                for index in _batches(len(T), self.batch_size, generator):
                    source_index = torch.randint(len(S), (min(len(index), len(S)),), generator=generator)
                    optimizer.zero_grad()
                    codes_s, loss_s = trimmed(S[source_index])
                    codes_t, loss_t = trimmed(T[index])
                    loss = loss_s + loss_t
                    if self.mmd_weight > 0:
                        loss = loss + self.mmd_weight * gaussian_mmd(codes_s, codes_t)
                    loss.backward()
                    optimizer.step()
        self.network_ = net.cpu().eval()
        self.cluster_centers_ = _kmeans(self._encode(Zs), self.n_clusters, seed)
        self.recon_reference_, self.distance_reference_ = self._parts(Zt)
        self.decision_scores_ = self._combine(self.recon_reference_, self.distance_reference_)

    def _encode(self, Z: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.network_["encoder"](torch.as_tensor(Z, dtype=torch.float32)).double().numpy()

    def _parts(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.no_grad():
            x = torch.as_tensor(Z, dtype=torch.float32)
            codes = self.network_["encoder"](x)
            error = (self.network_["decoder"](codes) - x).pow(2).mean(dim=1).double().numpy()
        return error, nearest_distance(codes.double().numpy(), self.cluster_centers_)

    def _combine(self, error: np.ndarray, distance: np.ndarray) -> np.ndarray:
        w = self.recon_weight
        return w * _robust_standardise(error, self.recon_reference_) + (1.0 - w) * _robust_standardise(distance, self.distance_reference_)

    def _decision_function(self, X):
        error, distance = self._parts(self.target_scaler_.transform(self._to_space(X)))
        return self._combine(error, distance)


def _batches(n: int, batch_size: int, generator):
    import torch

    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        if len(index) >= 2 or n < 2:  # a single-row batch gives no MMD and a noisy step
            yield index
