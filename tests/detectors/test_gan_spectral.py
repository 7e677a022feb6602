"""The mathematics of the GAN-based and the spectral transfer detectors (conformance is shared)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anomaly_gym.detectors import MetaGANDetector, ScratchGANDetector, TransferSpectralClustering
from anomaly_gym.detectors.spectral import local_scaling_affinity
from anomaly_gym.envs import make_synthetic_task
from anomaly_gym.envs.features import FeaturizerConfig

SMALL_FEATURIZER = FeaturizerConfig(detectors=("knn", "hbos", "ecod", "pca"), descriptors=False)


@pytest.fixture(scope="module")
def family():
    """Three source tasks and one new target task from the same generator (6 columns)."""
    sources = [make_synthetic_task("global", n_rows=400, n_features=6, contamination=0.1, seed=300 + s) for s in range(3)]
    target = make_synthetic_task("global", n_rows=400, n_features=6, contamination=0.1, seed=310)
    return ([t.X for t in sources], [t.y for t in sources]), target


def test_meta_initialised_discriminator_starts_with_a_lower_loss_on_a_new_task(family):
    # Two seeds of the generator are unrelated Gaussian mixtures: what carries over between
    # tasks is their dataset-relative features, the space the meta-GAN is meant for.
    source, target = family
    space = {"feature_space": "features", "featurizer": SMALL_FEATURIZER}
    meta = MetaGANDetector(**space).fit(target.X, source=source)
    scratch = ScratchGANDetector(**space).fit(target.X, source=source)
    # Step 0 is the initialisation's loss on the target (real rows vs its generator's fakes
    # and the reference rows); a random initialisation sits near 2 log 2.
    assert scratch.finetune_losses_[0] == pytest.approx(2 * np.log(2), abs=0.15)
    assert meta.finetune_losses_[0] < scratch.finetune_losses_[0] - 0.2
    # The same comparison through the public loss, on the same seeded fakes of each model.
    meta_loss = meta.discriminator_loss(target.X, network=meta.initial_network())
    scratch_loss = scratch.discriminator_loss(target.X, network=scratch.initial_network())
    assert meta_loss < scratch_loss


def test_scratch_twin_is_the_meta_gan_without_meta_iterations(family):
    source, target = family
    scratch = ScratchGANDetector(finetune_steps=20).fit(target.X, source=source)
    no_meta = MetaGANDetector(meta_iterations=0, finetune_steps=20).fit(target.X, source=source)
    np.testing.assert_array_equal(scratch.decision_scores_, no_meta.decision_scores_)
    meta = MetaGANDetector(meta_iterations=3, inner_steps=5, finetune_steps=20).fit(target.X, source=source)
    assert not np.array_equal(meta.decision_scores_, scratch.decision_scores_)


def test_without_fine_tuning_the_network_is_the_meta_initialisation(family):
    source, target = family
    det = MetaGANDetector(meta_iterations=4, inner_steps=5, finetune_steps=0).fit(target.X, source=source)
    assert len(det.finetune_losses_) == 1
    for key, value in det.network_.state_dict().items():
        torch.testing.assert_close(value, det.meta_state_[key])
    # The score is the discriminator's "not normal" logit.
    Z = torch.as_tensor(det.target_scaler_.transform(target.X[:5]), dtype=torch.float32)
    with torch.no_grad():
        logit = det.initial_network()["discriminator"](Z).reshape(-1).double().numpy()
    np.testing.assert_allclose(det.decision_function(target.X[:5]), -logit, rtol=1e-6)


def test_meta_gan_rejects_bad_parameters(family):
    source, target = family
    for params, match in (({"meta_lr": 0.0}, "meta_lr"), ({"background": 1.0}, "background"), ({"finetune_steps": -1}, "finetune_steps"), ({"lr": 0.0}, "lr")):
        with pytest.raises(ValueError, match=match):
            MetaGANDetector(**params).fit(target.X, source=source)


def test_local_scaling_affinity_is_a_symmetric_knn_graph():
    Z = np.random.default_rng(0).normal(size=(60, 3))
    W = local_scaling_affinity(Z, n_neighbors=5).toarray()
    np.testing.assert_allclose(W, W.T)
    assert np.all(np.diag(W) == 0)
    assert W.max() <= 1.0 and W.min() >= 0.0
    assert np.all((W > 0).sum(axis=1) >= 5)
    # An entry is exp(-d^2 / (sigma_i sigma_j)) with sigma the distance to the 5th neighbour.
    D = np.linalg.norm(Z[:, None] - Z[None], axis=-1)
    sigma = np.sort(D, axis=1)[:, 5]
    i, j = np.argwhere(W > 0)[0]
    assert W[i, j] == pytest.approx(np.exp(-(D[i, j] ** 2) / (sigma[i] * sigma[j])))


def test_spectral_clusters_keep_target_rows_unseen_in_the_source_small():
    rng = np.random.default_rng(0)
    blobs = np.array([[0.0, 0.0], [8.0, 0.0]])
    source = np.vstack([c + rng.normal(size=(200, 2)) for c in blobs])
    target_normal = np.vstack([c + 0.3 + rng.normal(size=(200, 2)) for c in blobs])
    novel = np.array([4.0, 8.0]) + 0.2 * rng.normal(size=(20, 2))  # more rows than n_neighbors
    target = np.vstack([target_normal, novel])
    det = TransferSpectralClustering(n_clusters=3, n_neighbors=10).fit(target, source=(source, None))
    assert det.large_.sum() == 2
    small = np.flatnonzero(~det.large_)[0]
    assert det.cluster_source_share_[small] == 0.0
    assert det.cluster_share_[small] == pytest.approx(20 / 820)
    np.testing.assert_allclose(det.cluster_source_share_[det.large_], 0.5, atol=0.05)
    scores = det.decision_scores_
    assert scores[-20:].min() > scores[:-20].max()
    # score = min over the large clusters of distance to the centroid / spread.
    Z = det.target_scaler_.transform(target)
    centers, spread = det.cluster_centers_[det.large_], det.cluster_spread_[det.large_]
    expected = (np.linalg.norm(Z[:, None] - centers[None], axis=-1) / spread).min(axis=1)
    np.testing.assert_allclose(scores, expected)


def test_spectral_graph_is_bounded_by_the_row_caps():
    rng = np.random.default_rng(1)
    source, target = rng.normal(size=(500, 3)), rng.normal(size=(800, 3))
    det = TransferSpectralClustering(max_source_rows=100, max_target_rows=150).fit(target, source=[source, source + 1])
    assert det.cluster_share_.sum() == pytest.approx(1.0)
    # Shares are multiples of 1 / 250: the graph held 2 x 50 source rows and 150 target rows.
    np.testing.assert_allclose(det.cluster_share_ * 250, np.round(det.cluster_share_ * 250), atol=1e-9)
    assert det.decision_scores_.shape == (800,)


def test_clusters_of_labelled_source_anomalies_are_not_normal_structure():
    rng = np.random.default_rng(0)
    blobs = np.array([[0.0, 0.0], [8.0, 0.0]])
    odd = np.array([4.0, 8.0])
    source = np.vstack([c + rng.normal(size=(200, 2)) for c in blobs] + [odd + 0.3 * rng.normal(size=(60, 2))])
    source_y = np.r_[np.zeros(400), np.ones(60)].astype(int)
    target = np.vstack([c + 0.3 + rng.normal(size=(200, 2)) for c in blobs] + [odd + 0.3 * rng.normal(size=(60, 2))])
    kwargs = {"n_clusters": 3, "n_neighbors": 10}
    with_labels = TransferSpectralClustering(**kwargs).fit(target, source=(source, source_y))
    odd_cluster = np.argmax(with_labels.cluster_anomaly_share_)
    assert with_labels.cluster_anomaly_share_[odd_cluster] == pytest.approx(1.0)
    assert not with_labels.large_[odd_cluster] and with_labels.large_.sum() == 2
    assert with_labels.decision_scores_[-60:].min() > with_labels.decision_scores_[:-60].max()
    # Without the source's anomalies the odd group (60 of 460 target rows) is a large cluster.
    without = TransferSpectralClustering(source_anomalies=False, **kwargs).fit(target, source=(source, source_y))
    assert without.large_.all()
    assert np.median(without.decision_scores_[-60:]) < np.median(without.decision_scores_[:-60]) * 2
