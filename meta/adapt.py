"""Fast adaptation of a meta-trained policy to a new target dataset.

:func:`adapt` returns a new :class:`~anomaly_gym.agents.bundle.PolicyBundle` tuned to the
target, with a record of what was done in ``metadata["adaptation"]``:

- **zero-shot** (no labels): the featurizer is fitted on the target's rows and the
  meta-policy is used as it is;
- **few-shot** (some rows labelled), two methods:

  - ``"head"`` (default): the policy's logit is calibrated to the labels and a short,
    shrunk boosting run on the target's own columns and the transferable features learns a
    correction of it (a *target head*, :mod:`anomaly_gym.agents.head`).  The meta-policy
    stays the prior; the labels move it only where they insist;
  - ``"fine-tune"``: the policy is fine-tuned with a few PPO/A2C updates in a ±1
    environment built from the labelled rows (featurized relative to the whole target),
    early-stopped on a held-out part of the labelled rows;

- **unsupervised** (``mode="unsupervised"``): self-training on the policy's most confident
  pseudo-labels (top-scored rows as anomalies, low-scored rows as normal).

A **negative-transfer guard** protects all three.  The target head is shrunk toward the
unadapted policy by the evidence its out-of-fold predictions give on the labelled rows
(:func:`shrinkage_weight`): labels that carry no signal (neither the policy nor the head
ranks them above chance) leave the policy as it was, real labels keep the head whole unless
it ranks them clearly worse than the policy, and the weight and its evidence are in the
record.  Fine-tuning keeps the adapted policy only when it beats the unadapted one on a
held-out part of the labels, or of the pseudo-labels while staying close in ranking to it
(unsupervised); otherwise the unadapted policy is kept and the record says so.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from anomaly_gym.agents.bundle import PolicyBundle
from anomaly_gym.agents.factory import ALGORITHMS, anomaly_proba, policy_margin, quiet_logger
from anomaly_gym.agents.head import HeadSettings, fit_head
from anomaly_gym.envs.tasks import Task, make_task
from scipy.special import expit
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

logger = logging.getLogger(__name__)

Mode = Literal["auto", "zero-shot", "few-shot", "unsupervised"]
FewShotMethod = Literal["head", "fine-tune"]
UNKNOWN = -1


@dataclass(frozen=True)
class AdaptSettings:
    """How few-shot and unsupervised adaptation run."""

    few_shot: FewShotMethod = "head"
    """Few-shot method: ``"head"`` (a boosted correction of the policy's logit on the target's
    columns) or ``"fine-tune"`` (PPO/A2C updates of the policy itself)."""
    head: HeadSettings = HeadSettings()
    """How the target head is fitted (few-shot ``"head"``)."""
    max_updates: int = 40
    """Most policy updates (each one rollout of ``n_envs * n_steps`` steps)."""
    patience: int = 10
    """Stop after this many updates without a better held-out AUROC."""
    n_envs: int = 8
    """Environments collecting the rollouts."""
    n_steps: int = 64
    """Steps per environment per update."""
    learning_rate: float = 1e-3
    """Step size of the fine-tuning updates."""
    holdout: float = 0.3
    """Share of the labelled rows held out for early stopping and the guard."""
    pseudo_anomaly_share: float = 0.03
    """Unsupervised: the top-scored share of rows taken as pseudo-anomalies."""
    pseudo_normal_share: float = 0.5
    """Unsupervised: the lowest-scored share of rows taken as pseudo-normal."""
    min_rank_agreement: float = 0.7
    """Unsupervised guard: the adapted scores' Spearman correlation with the unadapted ones must stay above this."""


def few_shot_labels(y: np.ndarray, n_anomalies: int, n_normals: int, seed: int = 0) -> np.ndarray:
    """Reveal ``n_anomalies`` anomaly and ``n_normals`` normal labels of ``y`` at random; the rest are ``-1``."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    out = np.full(len(y), UNKNOWN, dtype=np.int8)
    for value, k in ((1, n_anomalies), (0, n_normals)):
        idx = np.flatnonzero(y == value)
        if k > len(idx):
            raise ValueError(f"asked for {k} labelled {'anomalies' if value else 'normal rows'} but the data has {len(idx)}")
        out[rng.choice(idx, size=k, replace=False)] = value
    return out


def adapt(
    bundle: PolicyBundle,
    target,
    labels: np.ndarray | None = None,
    *,
    mode: Mode = "auto",
    seed: int = 0,
    settings: AdaptSettings | None = None,
    device: str = "cpu",
) -> PolicyBundle:
    """Adapt ``bundle`` to ``target`` and return a new bundle (``bundle`` is not modified).

    Args:
        bundle: A meta-trained policy bundle.
        target: The target's rows: a :class:`Task` (its labels are ignored; pass them as
            ``labels``) or an array of shape (n, d).
        labels: Optional, length n: 1 = anomaly, 0 = normal, -1 = unknown.
        mode: ``"auto"`` picks few-shot when labels are given, else zero-shot;
            ``"unsupervised"`` self-trains on pseudo-labels.
        seed: Seed of the held-out split, the environments and the updates.
        settings: Fine-tuning settings.
        device: Where fine-tuning runs.

    Raises:
        ValueError: bad labels (wrong length, values outside {-1, 0, 1}, too few of a class).
    """
    settings = settings or AdaptSettings()
    X = target.X if isinstance(target, Task) else np.asarray(target, dtype=np.float32)
    name = target.name if isinstance(target, Task) else "target"
    if labels is not None:
        labels = _check_labels(labels, len(X), min_anomalies(settings))
        if mode == "auto":
            mode = "few-shot"
    elif mode == "auto":
        mode = "zero-shot"
    if mode == "few-shot" and labels is None:
        raise ValueError("few-shot adaptation needs labels (1 = anomaly, 0 = normal, -1 = unknown)")
    if mode not in ("zero-shot", "few-shot", "unsupervised"):
        raise ValueError(f"mode must be auto, zero-shot, few-shot or unsupervised, got {mode!r}")

    adapted = PolicyBundle(_clone_model(bundle.model, device), bundle.featurizer_config, copy.deepcopy(bundle.metadata))
    featurizer = adapted.fit_featurizer(X)
    features = featurizer.transform(X)
    record: dict = {"mode": mode, "target": name, "rows": int(len(X)), "seed": seed}

    if mode == "few-shot" and settings.few_shot == "head":
        record.update(_fit_target_head(adapted, X, features, labels, settings.head, seed))
    elif mode == "few-shot":
        if settings.few_shot != "fine-tune":
            raise ValueError(f"few_shot must be 'head' or 'fine-tune', got {settings.few_shot!r}")
        record.update(method="fine-tune")
        record.update(_fine_tune(adapted, features, labels, settings, seed, name, pseudo=False))
    elif mode == "unsupervised":
        base = anomaly_proba(adapted.model, features)
        pseudo = _pseudo_labels(base, _consensus(features, bundle.featurizer_config), settings)
        record["pseudo_anomalies"] = int((pseudo == 1).sum())
        record["pseudo_normals"] = int((pseudo == 0).sum())
        record.update(_fine_tune(adapted, features, pseudo, settings, seed, name, pseudo=True))
        if record["kept"] == "adapted":
            rho = float(spearmanr(base, anomaly_proba(adapted.model, features)).statistic)
            record["rank_agreement"] = rho
            if not rho >= settings.min_rank_agreement:
                adapted.model = _clone_model(bundle.model, device)
                record["kept"] = "unadapted"
                record["reason"] = f"adapted scores drifted from the unadapted ones (Spearman {rho:.3f} < {settings.min_rank_agreement})"
    else:
        record["kept"] = "unadapted"
        record["reason"] = "zero-shot: the featurizer was fitted on the target; the policy is unchanged"
    if record.get("kept") == "unadapted" and mode != "zero-shot":
        logger.warning("adaptation kept the unadapted policy: %s", record["reason"])
    adapted.metadata["adaptation"] = record
    return adapted


def parse_labels(values, *, where: str = "labels", first_line: int = 1, unit: str = "line") -> np.ndarray:
    """Partial labels from user input: 1 = anomaly, 0 = normal, empty or -1 = unknown.

    ``values`` may hold numbers, numeric strings, ``None`` or NaN.  Anything else (``2``,
    ``255``, ``0.5``, ``"yes"``) is refused with the place it came from: entry ``i`` is
    ``{unit} {first_line + i}`` of ``where``.  Returns int8 with -1 for unknown.
    """
    import pandas as pd

    raw = pd.Series(np.asarray(values, dtype=object))
    text = raw.map(lambda v: v.strip() if isinstance(v, str) else v)
    blank = text.isna() | (text == "")
    numbers = pd.to_numeric(text.where(~blank), errors="coerce").to_numpy(dtype=float)
    bad = ~blank.to_numpy() & ~np.isin(numbers, [UNKNOWN, 0.0, 1.0])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{where}, {unit} {first_line + i}: label {raw.iloc[i]!r} is not 1 (anomaly), 0 (normal) or empty/-1 (unknown); "
            f"fix that {unit}{f' and {int(bad.sum()) - 1} more' if bad.sum() > 1 else ''}"
        )
    return np.where(blank.to_numpy(), UNKNOWN, np.nan_to_num(numbers, nan=UNKNOWN)).astype(np.int8)


def read_labels_file(path, n_rows: int) -> np.ndarray:
    """A CSV ``row,label`` file (row = 0-based data row) -> labels for ``n_rows`` rows, -1 where absent.

    Rows must be integers in ``0..n_rows-1`` and appear once; labels follow :func:`parse_labels`.
    Every problem names the file's line.
    """
    import pandas as pd

    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"row", "label"} <= set(table.columns):
        raise ValueError(f"{path}: expected a header with columns row,label; found {list(table.columns)}")
    rows = pd.to_numeric(table["row"].str.strip(), errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(rows) | (rows != np.round(rows)) | (rows < 0) | (rows >= n_rows)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}, line {i + 2}: row {table['row'].iloc[i]!r} is not a data row number in 0..{n_rows - 1}")
    rows = rows.astype(np.int64)
    seen: dict[int, int] = {}
    for i, r in enumerate(rows):
        if r in seen:
            raise ValueError(f"{path}, line {i + 2}: row {r} is labelled again (first on line {seen[r] + 2}); keep one label per row")
        seen[r] = i
    labels = np.full(n_rows, UNKNOWN, dtype=np.int8)
    labels[rows] = parse_labels(table["label"].to_numpy(), where=str(path), first_line=2)
    return labels


# --------------------------------------------------------------------------- internals


def min_anomalies(settings: AdaptSettings) -> int:
    """Labelled anomalies few-shot adaptation needs: 1 for a target head, 2 for fine-tuning (one to hold out)."""
    return 1 if settings.few_shot == "head" else 2


def _check_labels(labels, n: int, least_anomalies: int = 2) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"labels must have one entry per target row ({n}), got shape {labels.shape}")
    if labels.dtype.kind == "f":
        labels = np.where(np.isnan(labels), UNKNOWN, labels)
    bad = ~np.isin(labels, [UNKNOWN, 0, 1])
    if bad.any():
        raise ValueError(f"labels must be 1 (anomaly), 0 (normal) or -1 (unknown); found {np.unique(labels[bad])[:5].tolist()}")
    labels = labels.astype(np.int8)
    n_anom, n_norm = int((labels == 1).sum()), int((labels == 0).sum())
    if n_anom < least_anomalies or n_norm < 2:
        raise ValueError(
            f"few-shot adaptation needs at least {least_anomalies} labelled "
            f"{'anomaly' if least_anomalies == 1 else 'anomalies'} and 2 labelled normal rows, got {n_anom} and {n_norm}"
            + ("" if least_anomalies == 1 else " (a target head, --few-shot head, needs only one anomaly)")
        )
    return labels


def _clone_model(model, device: str):
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    for name, cls in ALGORITHMS.items():
        if isinstance(model, cls):
            return cls.load(buffer, device=device)
    raise TypeError(f"unsupported model type {type(model).__name__}")


def _constant(value: float):
    def schedule(_progress: float) -> float:
        return value

    return schedule


def _holdout_split(labels: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of the labelled rows into (fit, held-out), at least one of each class on each side."""
    fit, held = [], []
    for value in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == value))
        k = min(max(1, int(round(share * len(idx)))), len(idx) - 1)
        held.append(idx[:k])
        fit.append(idx[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held))


def _consensus(features: np.ndarray, config) -> np.ndarray:
    """The detector bank's own verdict: its mean percentile rank (or the mean of per-detector ranks)."""
    names = config.feature_names()
    if "consensus/pct_mean" in names:
        return features[:, names.index("consensus/pct_mean")]
    cols = [i for i, n in enumerate(names) if n.endswith("/pct")]
    return features[:, cols].mean(axis=1) if cols else np.zeros(len(features))


def _pseudo_labels(policy_scores: np.ndarray, bank_scores: np.ndarray, settings: AdaptSettings) -> np.ndarray:
    """Confident pseudo-labels: rows that the policy and the detector bank rank alike.

    Confidence is the mean of the two rank percentiles; the top share become anomalies and
    the bottom share normal.  Taking the bank's view as well as the policy's keeps the
    held-out criterion meaningful (the policy alone would agree with itself perfectly).
    """
    from scipy.stats import rankdata

    n = len(policy_scores)
    joint = (rankdata(policy_scores) + rankdata(bank_scores)) / (2.0 * n)
    order = np.argsort(-joint, kind="stable")
    out = np.full(n, UNKNOWN, dtype=np.int8)
    n_anom = max(2, int(round(settings.pseudo_anomaly_share * n)))
    n_norm = max(2, int(round(settings.pseudo_normal_share * n)))
    out[order[:n_anom]] = 1
    out[order[n - n_norm :]] = 0
    return out


def _logloss(y: np.ndarray, margin: np.ndarray) -> float:
    """Class-balanced log-loss of logits ``margin`` on labels ``y``."""
    p = np.clip(expit(margin), 1e-6, 1 - 1e-6)
    return float(0.5 * (-np.log(p[y == 1]).mean() - np.log(1 - p[y == 0]).mean()))


def _fit_target_head(bundle: PolicyBundle, X: np.ndarray, features: np.ndarray, labels: np.ndarray, settings: HeadSettings, seed: int) -> dict:
    """Few-shot by a target head, shrunk toward the unadapted policy by the evidence the labels give.

    The whole fit (calibration and trees) is cross-validated over ``settings.folds`` folds;
    on the labelled rows, the out-of-fold head gives the evidence (:func:`shrinkage_weight`),
    and the head fitted on every row is blended with the unadapted policy's logit by that
    weight (:meth:`~anomaly_gym.agents.head.TargetHead.shrunk`).  Labels that carry no signal
    leave the policy as it was; the more clearly the head ranks held-out labels, the more
    of it is kept.
    """
    from sklearn.model_selection import StratifiedKFold

    margin = policy_margin(bundle.model, features)
    rows = _head_rows(labels, settings, seed)
    y = (labels[rows] == 1).astype(np.int8)
    known = labels[rows] != UNKNOWN
    n_anomalies, n_normals = int((labels == 1).sum()), int((labels == 0).sum())
    record = {
        "method": "head",
        "labelled_rows": int(n_anomalies + n_normals),
        "labelled_anomalies": n_anomalies,
        "head_rows": int(len(rows)),
        "unlabelled_as_normal": settings.unlabelled_as_normal,
        "policy_prior": settings.policy_prior,
    }
    if not settings.guard:
        bundle.head = fit_head(X[rows], features[rows], margin[rows], y, settings, seed)
        record.update(kept="adapted", head_weight=1.0, head=bundle.head.describe(), reason="the guard is off: the head is kept whole, without a held-out check")
        return record
    if n_anomalies == 1:
        return _single_anomaly_head(bundle, X, features, margin, labels, rows, y, settings, seed, record)
    k = max(2, min(settings.folds, n_anomalies, n_normals))
    strata = labels[rows].astype(np.int64) + 1  # unknown / normal / anomaly, each spread over the folds
    if (np.bincount(strata) < k)[np.bincount(strata) > 0].any():
        strata = y
    oof_head = np.zeros(len(rows))
    oof_prior = np.zeros(len(rows))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a stratum smaller than the folds
        folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(rows, strata)
    for fit_idx, held_idx in folds:
        fit_rows, held_rows = rows[fit_idx], rows[held_idx]
        head = fit_head(X[fit_rows], features[fit_rows], margin[fit_rows], y[fit_idx], settings, seed)
        oof_head[held_idx] = head.margin(X[held_rows], features[held_rows], margin[held_rows])
        oof_prior[held_idx] = head.scale * margin[held_rows] + head.offset
    y_known, prior_known, head_known = y[known], margin[rows][known], oof_head[known]
    auc_prior = float(roc_auc_score(y_known, prior_known))
    auc_head = float(roc_auc_score(y_known, head_known))
    evidence = shrinkage_weight(auc_head, auc_prior, int(y_known.sum()), int((y_known == 0).sum()), settings)
    w = evidence["weight"]
    blend = (1.0 - w) * prior_known + w * head_known
    auc_after = float(roc_auc_score(y_known, blend))
    record.update(
        {
            "guard_folds": k,
            "held_out_rows": int(known.sum()),
            "held_out_auroc_before": round(auc_prior, 6),
            "held_out_logloss_before": _logloss(y_known, oof_prior[known]),
            "held_out_auroc_head": round(auc_head, 6),  # the whole head's, out of fold; _after is the kept blend's
            "held_out_logloss_head": _logloss(y_known, head_known),
            "held_out_auroc_after": round(auc_after, 6),
            "evidence": evidence,
            "head_weight": w,
        }
    )
    summary = (
        f"on the {int(known.sum())} labelled rows the head ranks with AUROC {auc_head:.3f} out of fold ({k}-fold), "
        f"the unadapted policy {auc_prior:.3f} (evidence z = {evidence['z']:.2f} above chance)"
    )
    if w == 0.0:
        record.update(kept="unadapted", reason=f"{summary}: too little evidence, the bundle keeps the unadapted policy")
        return record
    bundle.head = fit_head(X[rows], features[rows], margin[rows], y, settings, seed).shrunk(w)
    record.update(
        kept="adapted",
        head=bundle.head.describe(),
        reason=f"{summary}: the head is kept with weight {w:.2f} (held-out AUROC {auc_prior:.3f} -> {auc_after:.3f})",
    )
    return record


def _single_anomaly_head(bundle, X, features, margin, labels, rows, y, settings: HeadSettings, seed: int, record: dict) -> dict:
    """The guard with one labelled anomaly: nothing can be held out, so it asks whether the label agrees with the policy.

    The head's weight is :func:`single_label_weight` of the unadapted policy's AUROC on the
    labelled rows, that is, of where it ranks the one anomaly among the labelled normal rows.
    """
    known = labels[rows] != UNKNOWN
    auc_prior = float(roc_auc_score(y[known], margin[rows][known]))
    evidence = single_label_weight(auc_prior, int((y[known] == 0).sum()))
    w = evidence["weight"]
    record.update({"held_out_rows": 0, "labelled_auroc_before": round(auc_prior, 6), "evidence": evidence, "head_weight": w})
    summary = f"one labelled anomaly, which the unadapted policy ranks above {auc_prior:.1%} of the labelled normal rows (z = {evidence['z']:.2f})"
    if w == 0.0:
        record.update(kept="unadapted", reason=f"{summary}: the label disagrees with the policy, the bundle keeps the unadapted policy")
        return record
    bundle.head = fit_head(X[rows], features[rows], margin[rows], y, settings, seed).shrunk(w)
    record.update(kept="adapted", head=bundle.head.describe(), reason=f"{summary}: the head is kept with weight {w:.2f}")
    return record


def single_label_weight(auc_prior: float, n_normals: int) -> dict:
    """How much of a head fitted on one labelled anomaly to keep, from the policy's rank of it.

    With a single anomaly no out-of-fold check exists; what can be checked is whether the label
    agrees with the policy.  ``auc_prior`` (the share of labelled normal rows the policy ranks
    below the anomaly) is measured in standard errors of a one-anomaly AUROC under the null
    (``se = sqrt((n0 + 2) / (12 n0))``, about 0.29): at or below the median (z <= 0) the label
    contradicts the policy and none of the head is kept; at one standard error above (about
    the 79th percentile) or more, all of it; linear in between.
    """
    se = float(np.sqrt((n_normals + 2) / (12.0 * n_normals)))
    z = (auc_prior - 0.5) / se
    return {"z": round(z, 4), "se": round(se, 6), "weight": round(float(np.clip(z, 0.0, 1.0)), 4)}


def _head_rows(labels: np.ndarray, settings: HeadSettings, seed: int) -> np.ndarray:
    """The rows a head is fitted on: the labelled ones, and (capped) unlabelled ones as normal."""
    if not settings.unlabelled_as_normal:
        return np.flatnonzero(labels != UNKNOWN)
    rows = np.arange(len(labels))
    unknown = np.flatnonzero(labels == UNKNOWN)
    cap = settings.max_unlabelled_rows
    if cap is not None and len(unknown) > cap:
        keep = np.random.default_rng(seed).choice(unknown, size=cap, replace=False)
        rows = np.sort(np.concatenate([np.flatnonzero(labels != UNKNOWN), keep]))
    return rows


def shrinkage_weight(auc_head: float, auc_prior: float, n_anomalies: int, n_normals: int, settings: HeadSettings) -> dict:
    """How much of a target head to keep, from the AUROCs on the labelled rows.

    ``auc_head`` is the head's out-of-fold AUROC, ``auc_prior`` the unadapted policy's.  Both
    are measured in standard errors of an AUROC under the null hypothesis that the labels carry
    no signal (Mann-Whitney: ``se = sqrt((n1 + n0 + 1) / (12 n1 n0))``), so the number of
    labelled anomalies and normal rows sets how much a given AUROC counts:

    - ``signal``: do the labels carry any?  ``z = max(auc_head, auc_prior) - 0.5`` in standard
      errors (labels that the policy already ranks, or that the head learns to rank, are
      real), mapped linearly from 0 at ``settings.evidence_low`` to 1 at ``settings.evidence_high``;
    - ``agreement``: 1 unless the head ranks the labels worse than the unadapted policy,
      falling linearly to 0 at ``settings.disagreement_se`` standard errors worse.

    The weight is their product: labels at chance level get (nearly) none of the head, real
    labels all of it unless the head clearly does worse on them than the policy did.
    """
    se = float(np.sqrt((n_anomalies + n_normals + 1) / (12.0 * n_anomalies * n_normals)))
    z_head, z_prior = (auc_head - 0.5) / se, (auc_prior - 0.5) / se
    z = max(z_head, z_prior)
    signal = float(np.clip((z - settings.evidence_low) / (settings.evidence_high - settings.evidence_low), 0.0, 1.0))
    agreement = float(np.clip(1.0 + (auc_head - auc_prior) / se / settings.disagreement_se, 0.0, 1.0))
    return {
        "z": round(z, 4),
        "z_head": round(z_head, 4),
        "z_prior": round(z_prior, 4),
        "se": round(se, 6),
        "signal": round(signal, 4),
        "agreement": round(agreement, 4),
        "weight": round(signal * agreement, 4),
    }


def _fine_tune(bundle: PolicyBundle, features: np.ndarray, labels: np.ndarray, settings: AdaptSettings, seed: int, name: str, *, pseudo: bool) -> dict:
    """PPO/A2C updates on the labelled rows; keeps the adapted weights only if they beat the unadapted ones on held-out rows."""
    from anomaly_gym.envs.detect import AnomalyDetectionEnv
    from stable_baselines3.common.vec_env import DummyVecEnv

    model = bundle.model
    if bundle.algo == "dqn":
        raise ValueError("fine-tuning supports on-policy bundles (PPO, A2C); this bundle holds a DQN policy")
    rng = np.random.default_rng(seed)
    fit_idx, held_idx = _holdout_split(labels, settings.holdout, rng)
    y_held = labels[held_idx]
    kind = "pseudo-labelled" if pseudo else "labelled"

    def held_out() -> tuple[float, float]:
        """(AUROC, -balanced log-loss) on the held-out rows: compared as a tuple, AUROC first.

        On pseudo-labels AUROC saturates (confident rows are easy to rank), so there the
        likelihood decides: self-training must make the policy surer of held-out pseudo-labels.
        """
        margin = policy_margin(model, features[held_idx])
        return (round(float(roc_auc_score(y_held, margin)), 6), -_logloss(y_held, margin))

    before = held_out()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant columns of feature rows are fine here
        task = make_task(f"{name}/{kind}", features[fit_idx], labels[fit_idx], source="adaptation", drop_constant=False, min_rows=2)
    feats_fit = features[fit_idx]

    def make_env():
        return AnomalyDetectionEnv(tasks=[task], features=[feats_fit], featurizer=bundle.featurizer_config, episode_length=settings.n_steps, cache_dir=False)

    env = DummyVecEnv([make_env for _ in range(settings.n_envs)])
    env.seed(seed)
    model = bundle.model = _reload_for_fine_tuning(model, env, settings, seed)
    initial = copy.deepcopy(model.policy.state_dict())
    callback = None
    if bundle.metadata.get("config", {}).get("monotone"):
        from anomaly_gym.agents.monotone import MonotoneLogitCallback, monotone_columns

        callback = MonotoneLogitCallback(monotone_columns(bundle.featurizer_config.feature_names()))
    best_auc, best_state, best_update, curve = before, None, 0, [before]
    stale = 0
    for update in range(1, settings.max_updates + 1):
        model.learn(settings.n_envs * settings.n_steps, reset_num_timesteps=False, progress_bar=False, callback=callback)
        auc = held_out()
        curve.append(auc)
        if auc > best_auc:
            best_auc, best_update, stale = auc, update, 0
            best_state = copy.deepcopy(model.policy.state_dict())
        else:
            stale += 1
            if stale >= settings.patience:
                break
    env.close()
    record = _fine_tune_record(labels, fit_idx, held_idx, curve, kind)
    if best_state is None:
        model.policy.load_state_dict(initial)
        record.update(
            kept="unadapted",
            held_out_auroc_after=before[0],
            reason=f"no update beat the unadapted policy on the {len(held_idx)} held-out {kind} rows (AUROC {before[0]:.3f}, log-loss {-before[1]:.3f})",
        )
    else:
        model.policy.load_state_dict(best_state)
        record.update(
            kept="adapted",
            held_out_auroc_after=best_auc[0],
            held_out_logloss_after=-best_auc[1],
            best_update=best_update,
            reason=f"held-out {kind} AUROC {before[0]:.3f} -> {best_auc[0]:.3f}, log-loss {-before[1]:.3f} -> {-best_auc[1]:.3f} after {best_update} update(s)",
        )
    return record


def _reload_for_fine_tuning(model, env, settings: AdaptSettings, seed: int):
    """``model`` reloaded on ``env`` with the fine-tuning hyperparameters (SB3 sizes the
    rollout buffer, schedules and optimizer when a model is built or loaded)."""
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    custom = {"n_steps": settings.n_steps, "learning_rate": settings.learning_rate, "lr_schedule": _constant(settings.learning_rate)}
    if hasattr(model, "batch_size"):
        custom["batch_size"] = min(model.batch_size, settings.n_envs * settings.n_steps)
    model = quiet_logger(type(model).load(buffer, env=env, device=model.device, custom_objects=custom))
    model.set_random_seed(seed)
    return model


def _fine_tune_record(labels: np.ndarray, fit_idx: np.ndarray, held_idx: np.ndarray, curve: list, kind: str) -> dict:
    """The part of the adaptation record every fine-tuning run has, kept or not."""
    before = curve[0]
    return {
        f"{kind}_rows": int((labels != UNKNOWN).sum()),
        "fine_tune_rows": int(len(fit_idx)),
        "held_out_rows": int(len(held_idx)),
        "held_out_auroc_before": before[0],
        "held_out_logloss_before": -before[1],
        "held_out_auroc_curve": [c[0] for c in curve],
        "updates": len(curve) - 1,
    }
