"""Fast adaptation: zero-shot, few-shot with early stopping, self-training, and the guard."""

import numpy as np
import pytest
from anomaly_gym.agents import PolicyBundle, make_agent
from anomaly_gym.agents.head import HeadSettings
from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task
from anomaly_gym.meta.adapt import AdaptSettings, adapt, few_shot_labels, shrinkage_weight
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

SMALL = FeaturizerConfig(detectors=("iforest", "ecod", "hbos", "knn"))
FAST = AdaptSettings(max_updates=12, patience=12, n_envs=4, n_steps=32)
FINE_TUNE = AdaptSettings(few_shot="fine-tune", max_updates=12, patience=12, n_envs=4, n_steps=32)


@pytest.fixture(scope="module")
def bundle():
    """A policy meta-trained briefly on 'global' anomalies."""
    sources = [make_synthetic_task("global", n_rows=400, n_features=5, seed=s, name=f"g{s}") for s in range(2)]
    env = AnomalyDetectionEnv(tasks=sources, featurizer=SMALL, episode_length=64)
    model = make_agent("ppo", env, net_arch=[8], device="cpu", seed=0, n_steps=128, batch_size=128, ent_coef=0.01)
    model.learn(1024)
    return PolicyBundle(model, SMALL, {"train_tasks": [t.name for t in sources]})


@pytest.fixture(scope="module")
def target():
    # 'clustered' anomalies: a tight far cluster the isolation-style bank handles differently than 'global'
    return make_synthetic_task("clustered", n_rows=600, n_features=6, contamination=0.08, seed=11)


def test_zero_shot_fits_the_featurizer_and_keeps_the_policy(bundle, target):
    adapted = adapt(bundle, target)
    record = adapted.metadata["adaptation"]
    assert record["mode"] == "zero-shot" and record["kept"] == "unadapted"
    assert adapted.featurizer is not None and adapted.featurizer.n_columns_ == target.n_features
    np.testing.assert_allclose(adapted.score(target.X, refit=False), bundle.score(target.X))
    assert bundle.metadata.get("adaptation") is None  # the input bundle is untouched


def test_few_shot_fine_tuning_improves_auroc_on_the_unlabelled_rest(bundle, target):
    labels = few_shot_labels(target.y, 10, 50, seed=0)
    rest = labels == -1
    zero = adapt(bundle, target.X)
    few = adapt(bundle, target.X, labels, settings=FINE_TUNE, seed=0)
    record = few.metadata["adaptation"]
    assert record["mode"] == "few-shot" and record["method"] == "fine-tune"
    assert record["labelled_rows"] == 60 and record["held_out_rows"] + record["fine_tune_rows"] == 60
    assert few.head is None
    auc_zero = roc_auc_score(target.y[rest], zero.score(target.X[rest], refit=False))
    auc_few = roc_auc_score(target.y[rest], few.score(target.X[rest], refit=False))
    assert record["kept"] == "adapted"
    assert record["held_out_auroc_after"] > record["held_out_auroc_before"]
    # seeded floor: the policy meta-trained on 'global' anomalies learns the clustered ones
    # from 60 labels (0.83 -> 0.96 on the unlabelled rows when this was written)
    assert auc_few > auc_zero + 0.05
    assert auc_few > 0.9


def test_few_shot_head_improves_auroc_on_the_unlabelled_rest(bundle, target):
    labels = few_shot_labels(target.y, 10, 50, seed=0)
    rest = labels == -1
    zero = adapt(bundle, target.X)
    few = adapt(bundle, target.X, labels, seed=0)  # the default few-shot method
    record = few.metadata["adaptation"]
    assert record["mode"] == "few-shot" and record["method"] == "head"
    assert record["labelled_rows"] == 60 and record["labelled_anomalies"] == 10
    assert record["head_rows"] == target.n_rows and record["held_out_rows"] == 60  # guard scored on labelled rows only
    assert record["kept"] == "adapted" and few.head is not None
    assert record["held_out_auroc_after"] >= record["held_out_auroc_before"]
    auc_zero = roc_auc_score(target.y[rest], zero.score(target.X[rest], refit=False))
    auc_few = roc_auc_score(target.y[rest], few.score(target.X[rest], refit=False))
    assert auc_few > auc_zero + 0.05
    assert auc_few > 0.9
    # the policy stays the prior: the adapted score is the calibrated policy logit plus the trees
    features = few.featurizer.transform(target.X)
    from anomaly_gym.agents.factory import policy_margin

    base = few.head.scale * policy_margin(few.model, features) + few.head.offset
    assert few.head.scale > 0
    trees = few.margin(features, target.X) - base
    assert np.abs(trees).max() > 0 and np.abs(trees).mean() < np.abs(base).mean()


def test_head_needs_the_raw_columns_it_was_adapted_on(bundle, target):
    few = adapt(bundle, target.X, few_shot_labels(target.y, 10, 50, seed=0), seed=0)
    assert few.head is not None
    features = few.featurizer.transform(target.X)
    with pytest.raises(ValueError, match="pass X as well"):
        few.anomaly_proba(features)
    with pytest.raises(ValueError, match="adapted to a target with 6 columns"):
        few.head.margin(target.X[:, :5], features, np.zeros(target.n_rows))


def test_head_can_fit_on_labelled_rows_only_or_on_a_share_of_the_unlabelled(bundle, target):
    settings = AdaptSettings(head=HeadSettings(unlabelled_as_normal=False))
    few = adapt(bundle, target.X, few_shot_labels(target.y, 10, 50, seed=0), settings=settings, seed=0)
    record = few.metadata["adaptation"]
    assert record["head_rows"] == 60 and record["unlabelled_as_normal"] is False
    capped = AdaptSettings(head=HeadSettings(max_unlabelled_rows=100))
    few = adapt(bundle, target.X, few_shot_labels(target.y, 10, 50, seed=0), settings=capped, seed=0)
    assert few.metadata["adaptation"]["head_rows"] == 160  # the 60 labelled rows and 100 drawn unlabelled ones


def test_head_without_guard_is_always_kept(bundle, target):
    rng = np.random.default_rng(0)
    labels = np.full(target.n_rows, -1)
    rows = rng.choice(target.n_rows, 40, replace=False)
    labels[rows[:20]], labels[rows[20:]] = 1, 0  # labels with no signal: a guard would refuse them
    settings = AdaptSettings(head=HeadSettings(guard=False))
    adapted = adapt(bundle, target.X, labels, settings=settings, seed=0)
    record = adapted.metadata["adaptation"]
    assert record["kept"] == "adapted" and adapted.head is not None and "guard is off" in record["reason"]
    assert "held_out_auroc_before" not in record  # no cross-validation was run


def _random_labels(n_rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.full(n_rows, -1)
    rows = rng.choice(n_rows, 40, replace=False)
    labels[rows[:20]], labels[rows[20:]] = 1, 0
    return labels


def test_fine_tune_guard_falls_back_on_contradictory_labels(bundle, target):
    """Labels drawn at random carry no signal: fitting them cannot generalise to held-out rows.

    Over several seeds the guard must never end worse than the unadapted policy on its own
    held-out labels, must fall back at least once, and a fallback must give exactly the
    unadapted scores.
    """
    fallbacks = 0
    for seed in range(4):
        adapted = adapt(bundle, target.X, _random_labels(target.n_rows, seed), settings=FINE_TUNE, seed=seed)
        record = adapted.metadata["adaptation"]
        assert record["held_out_auroc_after"] >= record["held_out_auroc_before"]
        if record["kept"] == "unadapted":
            fallbacks += 1
            assert "no update beat" in record["reason"]
            np.testing.assert_allclose(adapted.score(target.X, refit=False), bundle.score(target.X))
            assert record["held_out_auroc_after"] == record["held_out_auroc_before"]
    assert fallbacks >= 1


def test_head_shrinks_to_the_prior_on_labels_without_signal(bundle, target):
    """Random labels: the head's out-of-fold ranking is at chance, so (nearly) none of it is kept."""
    prior = bundle.score(target.X)
    weights = []
    for seed in range(4):
        adapted = adapt(bundle, target.X, _random_labels(target.n_rows, seed), seed=seed)
        record = adapted.metadata["adaptation"]
        w = record["head_weight"]
        weights.append(w)
        assert record["evidence"]["weight"] == w and 0.0 <= w <= 1.0
        assert abs(record["evidence"]["z"]) < 3  # chance-level evidence
        scores = adapted.score(target.X, refit=False)
        if w == 0.0:
            assert record["kept"] == "unadapted" and adapted.head is None and "too little evidence" in record["reason"]
            np.testing.assert_allclose(scores, prior)
        else:
            assert adapted.head.weight == pytest.approx(w)
        assert spearmanr(scores, prior).statistic > 0.9  # the ranking stays the prior's
    assert np.mean(weights) < 0.25


def test_head_moves_with_informative_labels(bundle, target):
    labels = few_shot_labels(target.y, 10, 50, seed=0)
    adapted = adapt(bundle, target.X, labels, seed=0)
    record = adapted.metadata["adaptation"]
    assert record["kept"] == "adapted" and record["head_weight"] > 0.5
    assert record["evidence"]["z"] > 2 and record["evidence"]["signal"] == 1.0
    assert f"weight {record['head_weight']:.2f}" in record["reason"]
    rest = labels == -1
    prior = bundle.score(target.X)
    scores = adapted.score(target.X, refit=False)
    assert spearmanr(scores, prior).statistic < 0.95  # the labels moved the ranking
    assert roc_auc_score(target.y[rest], scores[rest]) > roc_auc_score(target.y[rest], prior[rest]) + 0.05


def test_shrinkage_weight_counts_evidence_and_agreement():
    s = HeadSettings()
    assert shrinkage_weight(0.5, 0.5, 10, 50, s)["weight"] == 0.0  # chance: nothing kept
    assert shrinkage_weight(0.95, 0.7, 10, 50, s)["weight"] == 1.0  # clear signal, better than the prior
    # the same AUROC counts for more with more labelled anomalies
    few, many = shrinkage_weight(0.68, 0.6, 5, 50, s), shrinkage_weight(0.68, 0.6, 40, 400, s)
    assert few["weight"] < many["weight"] and few["se"] > many["se"]
    # labels the policy already ranks are real even when the head learns little from them
    assert shrinkage_weight(0.6, 0.9, 10, 50, s)["signal"] == 1.0
    # a head that ranks clearly worse than the unadapted policy is shrunk although it beats chance
    worse = shrinkage_weight(0.8, 0.99, 20, 200, s)
    assert worse["signal"] == 1.0 and worse["agreement"] < 0.5 and worse["weight"] == worse["agreement"]
    assert shrinkage_weight(0.97, 0.99, 20, 200, s)["weight"] > 0.9  # a little worse: nearly all kept
    with pytest.raises(ValueError, match="evidence_high"):
        HeadSettings(evidence_low=2.0, evidence_high=1.0)


def test_head_rounds_average_trees_grown_on_draws_of_rows_and_columns(bundle, target):
    from anomaly_gym.agents.factory import policy_margin
    from anomaly_gym.agents.head import fit_head

    features = adapt(bundle, target).featurizer.transform(target.X)
    margin = policy_margin(bundle.model, features)
    bagged = fit_head(target.X, features, margin, target.y, HeadSettings(n_estimators=8), seed=0)
    plain = fit_head(target.X, features, margin, target.y, HeadSettings(n_estimators=8, num_parallel_tree=1, subsample=1.0, colsample_bynode=1.0), seed=0)
    assert bagged.booster.num_boosted_rounds() == plain.booster.num_boosted_rounds() == 8
    assert len(bagged.booster.get_dump()) == 8 * 5 and len(plain.booster.get_dump()) == 8
    assert bagged.describe()["num_parallel_tree"] == 5 and bagged.describe()["subsample"] == 0.7
    again = fit_head(target.X, features, margin, target.y, HeadSettings(n_estimators=8), seed=0)
    np.testing.assert_array_equal(bagged.margin(target.X, features, margin), again.margin(target.X, features, margin))  # seeded
    for bad in ({"num_parallel_tree": 0}, {"subsample": 0.0}, {"colsample_bynode": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            HeadSettings(**bad)


def test_shrunk_head_blends_with_the_policy_logit_and_survives_a_round_trip(bundle, target, tmp_path):
    from anomaly_gym.agents import load_bundle
    from anomaly_gym.agents.factory import policy_margin

    few = adapt(bundle, target.X, few_shot_labels(target.y, 10, 50, seed=0), seed=0)
    head = few.head
    features = few.featurizer.transform(target.X)
    m = policy_margin(few.model, features)
    full = head.margin(target.X, features, m)
    np.testing.assert_allclose(head.shrunk(0.0).margin(target.X, features, m), m)
    np.testing.assert_allclose(head.shrunk(1.0).margin(target.X, features, m), full)
    np.testing.assert_allclose(head.shrunk(0.3).margin(target.X, features, m), 0.7 * m + 0.3 * full, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        head.shrunk(1.5)
    few.head = head.shrunk(0.4)
    few.save(tmp_path / "shrunk.bundle.zip")
    again = load_bundle(tmp_path / "shrunk.bundle.zip")
    assert again.head.weight == pytest.approx(few.head.weight)
    np.testing.assert_allclose(again.score(target.X, refit=False), few.score(target.X, refit=False), rtol=1e-5)


def test_unsupervised_self_training_improves_its_held_out_pseudo_labels(bundle, target):
    adapted = adapt(bundle, target.X, mode="unsupervised", settings=FAST, seed=0)
    record = adapted.metadata["adaptation"]
    assert record["mode"] == "unsupervised"
    n = target.n_rows
    assert record["pseudo_anomalies"] == round(FAST.pseudo_anomaly_share * n)
    assert record["pseudo_normals"] == round(FAST.pseudo_normal_share * n)
    assert record["pseudo-labelled_rows"] == record["pseudo_anomalies"] + record["pseudo_normals"]
    # seeded: self-training makes the policy surer of held-out pseudo-labels and keeps its ranking
    assert record["kept"] == "adapted", record["reason"]
    assert (record["held_out_auroc_after"], -record["held_out_logloss_after"]) > (record["held_out_auroc_before"], -record["held_out_logloss_before"])
    assert record["rank_agreement"] >= FAST.min_rank_agreement
    before, after = bundle.score(target.X), adapted.score(target.X, refit=False)
    assert not np.allclose(before, after)  # the kept policy is the adapted one


def test_unsupervised_rank_guard_restores_the_unadapted_policy(bundle, target):
    """The Spearman guard: an adapted policy that drifts from the unadapted ranking is refused."""
    strict = AdaptSettings(max_updates=12, patience=12, n_envs=4, n_steps=32, min_rank_agreement=1.01)  # unreachable
    adapted = adapt(bundle, target.X, mode="unsupervised", settings=strict, seed=0)
    record = adapted.metadata["adaptation"]
    assert record["kept"] == "unadapted" and "Spearman" in record["reason"]
    assert record["rank_agreement"] < 1.01
    np.testing.assert_allclose(adapted.score(target.X, refit=False), bundle.score(target.X))


def test_bad_labels_are_rejected(bundle, target):
    with pytest.raises(ValueError, match="one entry per target row"):
        adapt(bundle, target.X, np.zeros(5))
    with pytest.raises(ValueError, match="1 \\(anomaly\\), 0 \\(normal\\) or -1"):
        adapt(bundle, target.X, np.full(target.n_rows, 2))
    with pytest.raises(ValueError, match="at least 1 labelled anomaly and 2 labelled normal rows"):
        adapt(bundle, target.X, few_shot_labels(target.y, 1, 1))
    with pytest.raises(ValueError, match="at least 2 labelled anomalies.*needs only one"):
        adapt(bundle, target.X, few_shot_labels(target.y, 1, 5), settings=AdaptSettings(few_shot="fine-tune"))
    with pytest.raises(ValueError, match="few_shot must be 'head' or 'fine-tune'"):
        adapt(bundle, target.X, few_shot_labels(target.y, 5, 5), settings=AdaptSettings(few_shot="boost"))
    with pytest.raises(ValueError, match="asked for 500 labelled anomalies"):
        few_shot_labels(target.y, 500, 5)


def test_head_splits_on_a_single_labelled_anomaly_among_rare_ones():
    """From a calibrated prior at a base rate of 1 in 2,000, all rows together weigh about one row's Hessian:
    a leaf of at least 1 could never split off, so the head's default allows far lighter leaves."""
    from anomaly_gym.agents.head import fit_head

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    X[7] = 6.0  # the one labelled anomaly, far from the rest
    y = np.zeros(2000, dtype=np.int8)
    y[7] = 1
    features, margin = rng.uniform(size=(2000, 2)), rng.normal(scale=0.01, size=2000)
    light = fit_head(X, features, margin, y, HeadSettings(n_estimators=5), seed=0)
    heavy = fit_head(X, features, margin, y, HeadSettings(n_estimators=5, min_child_weight=1.0), seed=0)
    assert all(tree.count("leaf=") == 1 for tree in heavy.booster.get_dump())  # no tree could split
    assert sum(tree.count("leaf=") > 1 for tree in light.booster.get_dump()) > 0
    scores = light.margin(X, features, margin)
    assert scores[7] > np.quantile(scores, 0.9)  # the split lifts the labelled anomaly's side
    assert light.describe()["min_child_weight"] == 0.1
    with pytest.raises(ValueError, match="min_child_weight"):
        HeadSettings(min_child_weight=-1.0)


def test_one_labelled_anomaly_adapts_a_head_weighted_by_where_the_policy_ranks_it(bundle, target):
    """Nothing can be held out with one anomaly: the guard keeps the head as far as the label agrees with the policy."""
    from anomaly_gym.agents.factory import policy_margin
    from anomaly_gym.meta.adapt import single_label_weight

    features = adapt(bundle, target).featurizer.transform(target.X)
    margin = policy_margin(bundle.model, features)
    normals = np.flatnonzero(target.y == 0)[:100]
    anomalies = np.flatnonzero(target.y == 1)
    for pick, kept in ((anomalies[np.argmax(margin[anomalies])], "adapted"), (normals[np.argmin(margin[normals])], "unadapted")):
        labels = np.full(target.n_rows, -1, dtype=np.int8)
        labels[normals] = 0
        labels[pick] = 1  # the policy's top anomaly, or a "label" it ranks below every labelled normal row
        record = adapt(bundle, target.X, labels, seed=0).metadata["adaptation"]
        assert record["labelled_anomalies"] == 1 and record["kept"] == kept, record["reason"]
        assert record["head_weight"] == record["evidence"]["weight"] == (1.0 if kept == "adapted" else 0.0)
    # the ramp: none at the median, all from one standard error (about 0.29) above it
    assert single_label_weight(0.5, 100)["weight"] == 0.0 and single_label_weight(0.4, 100)["weight"] == 0.0
    assert single_label_weight(0.65, 100)["weight"] == pytest.approx(0.15 / np.sqrt(102 / 1200), abs=1e-3)
    assert single_label_weight(0.8, 100)["weight"] == 1.0
    unguarded = adapt(bundle, target.X, labels, seed=0, settings=AdaptSettings(head=HeadSettings(guard=False))).metadata["adaptation"]
    assert unguarded["kept"] == "adapted" and unguarded["head_weight"] == 1.0
