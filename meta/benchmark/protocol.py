"""The benchmark protocol: settings, few-shot label draws, methods, dataset-level folds, leakage rules.

The protocol is ADBench's (Han et al., NeurIPS 2022).  For every target dataset and seed,
:func:`~anomaly_gym.envs.tasks.benchmark_split` subsamples the target to at most 10,000
rows, splits it 70/30 (stratified) and min-max scales both parts with the training
part's statistics.  Every method sees the same split:

- **unsupervised baselines** are fitted on the training part without labels and score
  the test part;
- **few-shot**: K anomalies are labelled, drawn (seeded) from the *training* part only
  (:func:`draw_labels`); the label-aware baselines and the policy get exactly the same
  labels.  The draws are nested: the 5 labelled anomalies are among the 10;
- **transfer baselines** get ``source=(list of X, list of y)`` from the source datasets,
  never the target nor, when folds are used, any dataset of the target's fold;
- **the policy** is trained on source datasets only; targets that are also sources are
  held out by dataset-level K-fold (:func:`plan_folds`), and a bundle whose training or
  validation tasks hold the target raises :class:`LeakError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Columns of ``results.csv``.
COLUMNS = ("dataset", "method", "protocol", "labels", "seed", "auroc", "auprc", "fit_seconds", "score_seconds", "status", "error")

#: Unsupervised baselines run by default (PyOD's classics, one deep model, the ensemble).
UNSUPERVISED = ("iforest", "ecod", "copod", "hbos", "knn", "lof", "pca", "ocsvm", "cblof", "autoencoder", "mean_rank", "mean_z", "agreeing_z")
#: Transfer-clustering baselines run by default.
TRANSFER = ("feature_transfer_kmeans", "model_transfer_kmeans", "coral_kmeans", "dtc", "prototype_meta")
#: GAN-based baselines (PyOD's GAAL pair, the Reptile meta-GAN and its from-scratch twin) and
#: transfer spectral clustering: opt-in (``--methods default,gan,spectral``), not in the default set.
GAN = ("so_gaal", "mo_gaal", "meta_gan", "gan_scratch")
SPECTRAL = ("transfer_spectral",)
#: Names that stand for a group of methods in ``--methods``.
GROUPS = {"gan": GAN, "spectral": SPECTRAL}
#: Label-aware baselines run by default in the few-shot protocol.
LABEL_AWARE = ("xgbod", "devnet", "gradient_boosting")
POLICY = "policy"
#: Methods backed by the policy bundle (the policy and its few-shot ablations): each gets its
#: target's held-out bundle, like ``policy``.  Ablations run only when asked for.
POLICY_BACKED = (POLICY, "policy_unguarded", "head_without_policy")
PROTOCOLS = ("zero-shot", "few-shot")
#: Per-dataset differences smaller than this count as ties.
TIE = 1e-3


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """One protocol setting: zero-shot, or few-shot with a count or a share of labelled anomalies."""

    protocol: str
    count: int | None = None
    ratio: float | None = None

    @property
    def labels(self) -> str:
        """The ``labels`` column: ``0``, ``10`` (a count) or ``1%`` (a share)."""
        if self.protocol == "zero-shot":
            return "0"
        if self.count is not None:
            return str(self.count)
        return f"{self.ratio * 100:g}%"

    def n_labels(self, n_train_anomalies: int) -> int:
        """Labelled anomalies asked for, given the training part's anomalies."""
        if self.protocol == "zero-shot":
            return 0
        if self.count is not None:
            return self.count
        return max(1, int(round(self.ratio * n_train_anomalies)))


def settings_for(protocol: str, counts: Sequence[int] = (5, 10, 20), ratios: Sequence[float] = ()) -> list[Setting]:
    """The settings of ``protocol`` (``zero-shot``, ``few-shot`` or ``all``) with these label counts and shares."""
    if protocol not in ("zero-shot", "few-shot", "all"):
        raise ValueError(f"protocol must be 'zero-shot', 'few-shot' or 'all', got {protocol!r}")
    out = []
    if protocol in ("zero-shot", "all"):
        out.append(Setting("zero-shot"))
    if protocol in ("few-shot", "all"):
        counts, ratios = [int(k) for k in counts], [float(r) for r in ratios]
        if any(k < 1 for k in counts):
            raise ValueError(f"--labels must be positive integers, got {counts}")
        if any(not 0.0 < r <= 1.0 for r in ratios):
            raise ValueError(f"--label-ratio values must be in (0, 1], got {ratios}")
        if not counts and not ratios:
            raise ValueError("the few-shot protocol needs --labels K,... or --label-ratio R,...")
        out += [Setting("few-shot", count=k) for k in dict.fromkeys(counts)]
        out += [Setting("few-shot", ratio=r) for r in dict.fromkeys(ratios)]
    return out


def parse_label_counts(text: str | None) -> list[int]:
    """``--labels``: comma-separated counts, or ``none``."""
    if text is None or text.strip().lower() in ("", "none"):
        return []
    return _int_list(text, "--labels")


def parse_label_ratios(text: str | None) -> list[float]:
    """``--label-ratio``: comma-separated shares."""
    return [] if text is None else _float_list(text, "--label-ratio")


def parse_settings(protocol: str, labels: str | None, ratios: str | None) -> list[Setting]:
    """The settings asked for on the command line."""
    return settings_for(protocol, parse_label_counts(labels), parse_label_ratios(ratios))


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _float_list(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated numbers, got {text!r}") from None


def draw_labels(train_y: np.ndarray, setting: Setting, seed: int) -> tuple[np.ndarray, str]:
    """Few-shot labels over the training part: 1 for the labelled anomalies, 0 for every other row.

    The anomalies are drawn from the training part only, in a seeded order shared by every
    setting (the 5 labelled anomalies are among the 10).  When fewer anomalies exist than
    asked for, all are labelled and the returned note says so.
    """
    train_y = np.asarray(train_y)
    anomalies = np.flatnonzero(train_y == 1)
    k = setting.n_labels(len(anomalies))
    note = ""
    if k > len(anomalies):
        note = f"only {len(anomalies)} anomalies in the training part: all of them are labelled"
        k = len(anomalies)
    order = np.random.default_rng([int(seed), 7411]).permutation(anomalies)
    y = np.zeros(len(train_y), dtype=np.int8)
    y[order[:k]] = 1
    return y, note


def resolve_methods(text: str | Sequence[str] | None, settings: Sequence[Setting]) -> list[str]:
    """Method names to run (comma-separated text or a list; group names expanded), checked against the registry."""
    from anomaly_gym.detectors import DETECTORS

    few = any(s.protocol == "few-shot" for s in settings)
    default = [POLICY, *UNSUPERVISED, *TRANSFER, *(LABEL_AWARE if few else ())]
    if text is None:
        return default
    names: list[str] = []
    tokens = text.split(",") if isinstance(text, str) else list(text)
    for token in (str(t).strip().lower() for t in tokens):
        if not token:
            continue
        names += default if token == "default" else list(GROUPS.get(token, (token,)))
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from 'policy', 'default', {sorted(GROUPS)} and {sorted(DETECTORS)}")
    if not names:
        raise ValueError("--methods is empty")
    if not few:
        label_only = [n for n in names if DETECTORS[n].requires_labels]
        if label_only:
            warnings.warn(f"{label_only} need labels and run only in the few-shot protocol; they are skipped", UserWarning, stacklevel=2)
    return list(dict.fromkeys(names))


def applies(method: str, setting: Setting) -> bool:
    """Whether ``method`` runs under ``setting`` (label-aware baselines only with labels)."""
    from anomaly_gym.detectors import DETECTORS

    return setting.protocol == "few-shot" or not DETECTORS[method].requires_labels


def uses_labels(method: str) -> bool:
    """Whether the method's result depends on the few-shot labels."""
    from anomaly_gym.detectors import DETECTORS

    return method in POLICY_BACKED or DETECTORS[method].requires_labels


# --------------------------------------------------------------------------- tasks and folds


def load_task_sets(specs: Sequence[str]) -> list:
    """The tasks of every source spec (``builtin``, folders of ``.npz`` or ``.csv.gz``); names must be unique."""
    from anomaly_gym.envs.sources import load_tasks

    tasks = []
    for spec in specs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # constant columns are dropped by design
            tasks += load_tasks(spec)
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"dataset names must be unique across {list(specs)}; repeated: {repeated}")
    return tasks


def same_dataset(a, b) -> bool:
    """Two tasks are the same dataset when their original datasets' names (case-insensitive) or their contents agree.

    A derived task (anomalies planted into a dataset's normal rows) is the dataset it was made from.
    """
    return getattr(a, "dataset", a.name).lower() == getattr(b, "dataset", b.name).lower() or a.hash == b.hash


#: Datasets in ``../shared/data`` made from the same original data under two names: the
#: bank-marketing table and ADBench's one-hot copy of it (``campaign``), the covertype table
#: and ADBench's subsample of it (``cover``).
KNOWN_TWINS = {"bank": "campaign", "covertype": "cover"}


def parse_twins(text: str) -> dict[str, str]:
    """``"A=B,C=D"`` as ``{"A": "B", "C": "D"}``; ``"none"`` (or an empty text) as ``{}``."""
    if text.strip().lower() in ("", "none"):
        return {}
    pairs = [item.split("=") for item in text.split(",") if item.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise ValueError(f"--twins takes NAME=NAME pairs separated by commas (or 'none'), got {text!r}")
    return {a.strip(): b.strip() for a, b in pairs}


def join_twins(tasks: Sequence, twins: dict[str, str] | None) -> list:
    """``tasks`` with each pair of ``twins`` made one original dataset (:func:`same_dataset`).

    Two datasets made from the same data under different names (a table and a benchmark's
    one-hot copy of it) differ in name and content, so nothing else can tell that they are
    one dataset.  Each task whose name or :attr:`~anomaly_gym.envs.tasks.Task.dataset` is
    one of a pair's names gets the pair's first name (lower case) as its ``family``: folds
    then hold the pair out together, and no transfer baseline scoring one sees the other.
    Tasks of no pair are returned as they are.
    """
    import dataclasses

    key_of = {}
    for a, b in (twins or {}).items():
        key_of[a.lower()] = key_of[b.lower()] = a.lower()
    out = []
    for t in tasks:
        dataset = getattr(t, "dataset", t.name).lower()
        key = key_of.get(t.name.lower(), key_of.get(dataset))
        out.append(dataclasses.replace(t, family=key) if key is not None and dataset != key else t)
    return out


def dataset_groups(tasks: Sequence) -> list[list[str]]:
    """Names of ``tasks`` grouped into versions of one original dataset: the unit that folds never split.

    The rule:

    0. Tasks of one original dataset (:attr:`~anomaly_gym.envs.tasks.Task.dataset`: the
       classes of ``sklearn/digits`` each against the rest, planted tasks with the dataset
       they were planted into) are one group.
    1. Names that share a prefix before an ``_`` form a *family*, and a family is one
       group (``CIFAR10_0``, ``CIFAR10_4``, ``CIFAR10_6``: one-vs-rest tasks cut from one
       collection, which share images; :func:`name_families`).  Image and text embedding
       tasks all have the width of their network's output, so width says nothing about
       them, and once constant columns are dropped their widths differ even within a
       family.  The classes of MVTec-AD are different objects and share no images, but
       they share one capture setup and the kinds of defects, so they are one family too:
       the policy tested on an MVTec-AD class has seen none, as when it meets a new
       collection (grouping too much can only make the figures pessimistic, too little
       inflates them).
    2. The other tasks with the same number of columns form one group.  Benchmark
       collections hold several versions of one original dataset (ADBench's landsat and
       satellite, both 36 columns, landsat a standardised copy of satellite; breastw and
       WBC, both 9), and versions keep their width.

    Names compare case-insensitively.  Groups come out ordered: the width groups by width,
    then the families by key; members sorted.
    """
    ordered = sorted(tasks, key=lambda t: t.name.lower())
    families = name_families([t.name for t in ordered])
    datasets = [getattr(t, "dataset", t.name).lower() for t in ordered]
    by_width: dict[int, list[str]] = {}
    by_family: dict[str, list[str]] = {}
    for t, dataset in zip(ordered, datasets):
        if datasets.count(dataset) > 1:
            by_family.setdefault(dataset, []).append(t.name)
        elif t.name in families:
            by_family.setdefault(families[t.name], []).append(t.name)
        else:
            by_width.setdefault(int(t.n_features), []).append(t.name)
    return [by_width[w] for w in sorted(by_width)] + [by_family[key] for key in sorted(by_family)]


def name_families(names: Sequence[str]) -> dict[str, str]:
    """Family key (lower case) of each name that shares a prefix before an ``_`` with another name.

    The key is the shortest such shared prefix (``MVTec-AD_metal_nut`` and ``MVTec-AD_bottle``
    share ``mvtec-ad``); names that share none are left out.
    """

    def prefixes(name: str) -> list[str]:
        low = name.lower()
        return [low[:i] for i, ch in enumerate(low) if ch == "_" and i > 0]

    counts: dict[str, int] = {}
    for name in names:
        for prefix in set(prefixes(name)):
            counts[prefix] = counts.get(prefix, 0) + 1
    out = {}
    for name in names:
        shared = [p for p in prefixes(name) if counts[p] > 1]
        if shared:
            out[name] = shared[0]
    return out


def plan_folds(sources: Sequence, targets: Sequence, k: int, seed: int = 0) -> dict[str, str]:
    """Fold of each target: ``"1"`` .. ``"k"`` for targets among the sources, ``"all"`` for the others.

    The targets that are also sources are cut into ``k`` folds of near-equal size (fewer
    when there are fewer groups); the policy of fold ``i`` is trained on the sources minus
    fold ``i``'s datasets.  Versions of one original dataset share a fold
    (:func:`dataset_groups`: the same family name such as ``CIFAR10_*``, else the same
    width), so that one version never teaches the policy tested on another.  Groups
    are shuffled (seeded), then placed largest first, each into the fold with the fewest
    datasets.

    When the shared targets form a single group, no fold could keep a source: that group
    is then dealt out dataset by dataset, with a :class:`UserWarning` (and
    :func:`split_groups` reports it for ``folds.json``), because its figures may be
    inflated by one version teaching another.
    """
    if k < 2:
        raise ValueError(f"--folds must be at least 2, got {k}")
    shared = [t for t in targets if any(same_dataset(t, s) for s in sources)]
    folds = {t.name: "all" for t in targets}
    if not shared:
        return folds
    groups = dataset_groups(shared)
    if len(groups) == 1 and len(groups[0]) > 1:
        warnings.warn(
            f"the {len(groups[0])} shared datasets are all versions of one original by the fold rule (same width or "
            "family name); they are split across folds so that every fold's policy has sources, and their figures "
            "may be inflated",
            UserWarning,
            stacklevel=2,
        )
        groups = [[name] for name in groups[0]]
    ordered = [groups[int(i)] for i in np.random.default_rng(seed).permutation(len(groups))]
    ordered.sort(key=len, reverse=True)  # stable: equal sizes keep their shuffled order
    sizes = [0] * min(k, len(ordered))
    for group in ordered:
        fold = int(np.argmin(sizes))
        sizes[fold] += len(group)
        for name in group:
            folds[name] = str(fold + 1)
    return folds


def split_groups(targets: Sequence, folds: dict[str, str]) -> list[list[str]]:
    """Groups of :func:`dataset_groups` among the numbered folds' targets whose members sit in different folds."""
    held = [t for t in targets if folds.get(t.name, "all") != "all"]
    return [g for g in dataset_groups(held) if len({folds[n] for n in g}) > 1]


def fold_sources(sources: Sequence, targets: Sequence, folds: dict[str, str], fold: str) -> list:
    """The sources of ``fold``'s policy: every source that is none of the fold's targets."""
    held = [t for t in targets if folds.get(t.name) == fold]
    return [s for s in sources if not any(same_dataset(s, t) for t in held)]


class LeakError(ValueError):
    """The target is among the tasks the policy was trained (or selected) on."""


def check_not_trained_on(bundle, target: str) -> None:
    """Raise :class:`LeakError` if ``target`` is among ``bundle``'s training or validation tasks."""
    meta = getattr(bundle, "metadata", {}) or {}
    lower = target.lower()
    if lower in {str(n).lower() for n in meta.get("train_tasks", [])}:
        raise LeakError("target among the bundle's training tasks")
    if lower in {str(n).lower() for n in meta.get("val_tasks", [])}:
        raise LeakError("target among the bundle's validation tasks (they chose the checkpoint)")
