"""Transfer spectral clustering: target rows clustered on a graph that also holds the source's rows."""

from __future__ import annotations

import warnings

import numpy as np
from anomaly_gym.detectors._torch import seed_int
from anomaly_gym.detectors.base import SourceData
from anomaly_gym.detectors.transfer import TransferDetector, _check_positive, _normal_rows, _scaler
from anomaly_gym.envs.features import FeaturizerConfig
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.manifold import spectral_embedding
from sklearn.neighbors import NearestNeighbors


def local_scaling_affinity(Z: np.ndarray, n_neighbors: int) -> sparse.csr_matrix:
    """Symmetric k-NN affinity with self-tuning bandwidths (Zelnik-Manor & Perona, NIPS 2004).

    ``W_ij = exp(-d_ij^2 / (sigma_i sigma_j))`` for ``j`` among the ``n_neighbors`` nearest
    neighbours of ``i`` (or ``i`` among ``j``'s), where ``sigma_i`` is the distance from ``i``
    to its ``n_neighbors``-th neighbour; every other entry is 0 and the diagonal is 0.
    """
    k = max(1, min(int(n_neighbors), len(Z) - 1))
    dist, index = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z)
    dist, index = dist[:, 1:], index[:, 1:]  # drop each row itself
    sigma = np.maximum(dist[:, -1], 1e-12)
    rows = np.repeat(np.arange(len(Z)), k)
    values = np.exp(-(dist.reshape(-1) ** 2) / (sigma[rows] * sigma[index.reshape(-1)]))
    W = sparse.csr_matrix((values, (rows, index.reshape(-1))), shape=(len(Z), len(Z)))
    W = W.maximum(W.T).tocsr()
    W.setdiag(0.0)
    W.eliminate_zeros()
    return W


class TransferSpectralClustering(TransferDetector):
    """Transfer spectral clustering: a joint source-target graph, scored by distance to the large clusters.

    Formulation.  Let ``S`` be the source rows (normal rows, and labelled anomalies, see
    below) and ``T`` the target rows in the shared space, each dataset standardised with its
    own median / IQR (of all its rows: the target's include its anomalies too), with at most
    ``max_source_rows`` and ``max_target_rows`` rows drawn (seeded) for the graph.  On the
    joint rows ``J = [S; T]``:

    1. ``W`` is the symmetric k-NN affinity with self-tuning bandwidths
       (:func:`local_scaling_affinity`);
    2. ``U`` holds the ``n_clusters`` leading eigenvectors of the normalised affinity
       ``D^-1/2 W D^-1/2`` (:func:`sklearn.manifold.spectral_embedding`), each row scaled to
       unit length, and k-means on ``U`` gives ``n_clusters`` clusters of ``J``
       (Ng, Jordan & Weiss, NIPS 2001);
    3. each cluster ``k`` has a centroid ``c_k`` and a spread ``s_k`` (the median distance
       of its members to ``c_k``) in the shared space, and a size share ``w_k`` of ``J``.
       Clusters with ``w_k >= min_cluster_share`` whose source rows are not mostly labelled
       anomalies are the normal structure (labelled sources put their anomalies in ``S``
       too, ``source_anomalies``; if no cluster qualifies, the largest one not made mostly
       of source anomalies counts);
    4. a row's score is ``min_k ||x - c_k|| / s_k`` over the large clusters: its distance to
       the structure it is closest to, in units of that structure's spread.  Rows of small
       clusters only get distances to large ones, so they score high (the large / small
       cluster rule of CBLOF, He, Xu & Deng, Pattern Recognition Letters 2003).

    The source enters through the graph: its normal rows link the target's normal regions
    into large clusters, while target rows with no source row nearby are left in small
    clusters of their own; and in the shared, dataset-relative space, where every dataset's
    anomalies share high percentile ranks, the target's anomalies tend to join the clusters
    of the sources' labelled anomalies, which are not normal structure.  This is the joint-graph form of transfer spectral
    clustering (Jiang & Chung, "Transfer spectral clustering", ECML PKDD 2012), which
    clusters the target together with auxiliary data; their method also co-clusters the
    features (a bipartite row-feature graph shared by both domains), which is left out here:
    in the ``"features"`` space the columns are the same detector features for every
    dataset, so the row graph already lives in a shared space.

    Known limit: a group of fewer than ``n_neighbors`` target rows always links to rows
    outside it and tends to be absorbed by a large cluster; such rows then score by their
    distance to that cluster's centroid alone.

    Cost: the graph has at most ``max_source_rows + max_target_rows`` nodes and
    ``n_neighbors`` edges per node; the remaining target rows are scored out of sample
    (step 4 needs no embedding), so a 10,000-row target costs the same as a 3,000-row one.

    Args:
        n_clusters: Spectral clusters of the joint rows.
        n_neighbors: Neighbours per row in the affinity graph.
        min_cluster_share: Smallest share of the joint rows a cluster needs to count as
            normal structure (the largest cluster always counts).
        max_source_rows: Source rows in the graph (pooled, drawn evenly from every source).
        max_target_rows: Target rows in the graph.
        source_anomalies: Put a labelled source's anomalies in the graph too (as many, in
            proportion, as its normal rows drawn); clusters whose source rows are mostly
            labelled anomalies are not normal structure.
        feature_space: ``"auto"``, ``"raw"`` or ``"features"`` (see :mod:`anomaly_gym.detectors.transfer`).
        featurizer: Featurizer configuration of the ``"features"`` space.
        random_state: Seed of the row draws, the eigensolver and k-means.

    Attributes:
        cluster_centers_: Centroids ``c_k`` of every cluster, standardised shared space.
        cluster_spread_: Spreads ``s_k``.
        cluster_share_: Size shares ``w_k`` of the joint rows.
        cluster_source_share_: Share of each cluster's members that are source rows.
        cluster_anomaly_share_: Share of each cluster's source rows that are labelled anomalies.
        large_: Mask of the clusters that count as normal structure.
        target_scaler_: Robust scaler fitted on the target rows.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        n_neighbors: int = 15,
        min_cluster_share: float = 0.05,
        max_source_rows: int = 2000,
        max_target_rows: int = 3000,
        source_anomalies: bool = True,
        feature_space: str = "auto",
        featurizer: FeaturizerConfig | None = None,
        random_state: int | None = 0,
    ):
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.min_cluster_share = min_cluster_share
        self.max_source_rows = max_source_rows
        self.max_target_rows = max_target_rows
        self.source_anomalies = source_anomalies
        self.feature_space = feature_space
        self.featurizer = featurizer
        self.random_state = random_state

    def _fit(self, X, y, source: list[SourceData] | None) -> None:
        _check_positive(n_clusters=self.n_clusters, n_neighbors=self.n_neighbors, max_source_rows=self.max_source_rows, max_target_rows=self.max_target_rows)
        if not 0.0 <= self.min_cluster_share < 1.0:
            raise ValueError(f"min_cluster_share must be in [0, 1), got {self.min_cluster_share}")
        seed = seed_int(self.random_state)
        rng = np.random.default_rng([seed, 3])
        labelled, Zt = self._shared_space_labelled(X, source)
        per_source = max(1, self.max_source_rows // len(labelled))
        S, S_anomalous = [], []
        for i, (Z, ys) in enumerate(labelled):
            normal = _normal_rows(Z, ys, i)
            scaler = _scaler(Z)  # all rows, like the (contaminated) target's
            rows = _draw(scaler.transform(normal), per_source, rng)
            S.append(rows)
            S_anomalous.append(np.zeros(len(rows), dtype=bool))
            if self.source_anomalies and ys is not None and len(normal) < len(Z):
                # As many of the labelled anomalies as the draw keeps of the normal rows, proportionally.
                anomalies = scaler.transform(Z[ys == 1])
                keep = max(1, int(round(len(anomalies) * len(rows) / len(normal))))
                S.append(_draw(anomalies, keep, rng))
                S_anomalous.append(np.ones(len(S[-1]), dtype=bool))
        S, S_anomalous = np.vstack(S), np.concatenate(S_anomalous)
        self.target_scaler_ = _scaler(Zt)
        T = _draw(self.target_scaler_.transform(Zt), self.max_target_rows, rng)
        J = np.vstack([S, T])
        is_source = np.r_[np.ones(len(S), dtype=bool), np.zeros(len(T), dtype=bool)]
        is_anomaly = np.r_[S_anomalous, np.zeros(len(T), dtype=bool)]
        k = max(1, min(int(self.n_clusters), len(np.unique(J, axis=0))))
        labels = self._spectral_labels(J, k, seed)
        centers, spread, share, source_share, anomaly_share = [], [], [], [], []
        for c in range(k):
            in_c = labels == c
            if not in_c.any():
                continue
            members = J[in_c]
            centre = members.mean(axis=0)
            dist = np.linalg.norm(members - centre, axis=1)
            centers.append(centre)
            spread.append(float(np.median(dist)))
            share.append(len(members) / len(J))
            source_share.append(float(is_source[in_c].mean()))
            n_source = int(is_source[in_c].sum())
            anomaly_share.append(float(is_anomaly[in_c].sum() / n_source) if n_source else 0.0)
        self.cluster_centers_ = np.asarray(centers)
        self.cluster_share_ = np.asarray(share)
        self.cluster_source_share_ = np.asarray(source_share)
        self.cluster_anomaly_share_ = np.asarray(anomaly_share)
        spread = np.asarray(spread)
        positive = spread[spread > 1e-12]
        floor = 1e-3 * (np.median(positive) if positive.size else 1.0)
        self.cluster_spread_ = np.maximum(spread, floor)
        normal = (self.cluster_share_ >= self.min_cluster_share) & (self.cluster_anomaly_share_ <= 0.5)
        if not normal.any():
            normal[np.argmax(np.where(self.cluster_anomaly_share_ <= 0.5, self.cluster_share_, -1.0))] = True
        self.large_ = normal

    def _spectral_labels(self, J: np.ndarray, k: int, seed: int) -> np.ndarray:
        if k == 1:
            return np.zeros(len(J), dtype=int)
        W = local_scaling_affinity(J, self.n_neighbors)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "graph is not fully connected": the components are clusters
            U = spectral_embedding(W, n_components=k, random_state=seed, drop_first=False)
        U /= np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(U)

    def _decision_function(self, X):
        Z = self.target_scaler_.transform(self._to_space(X))
        centers, spread = self.cluster_centers_[self.large_], self.cluster_spread_[self.large_]
        dist = np.sqrt(((Z[:, None, :] - centers[None, :, :]) ** 2).sum(axis=-1))
        return (dist / spread).min(axis=1)


def _draw(Z: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``n`` rows of ``Z``, drawn without replacement."""
    if len(Z) <= n:
        return Z
    return Z[np.sort(rng.choice(len(Z), size=n, replace=False))]


__all__ = ["TransferSpectralClustering", "local_scaling_affinity"]
