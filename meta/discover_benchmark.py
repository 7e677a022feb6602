"""The active-discovery protocol: anomalies found within a query budget, on held-out datasets.

For every target and seed each method shows ``budget`` rows one at a time and learns each
row's label once shown (:func:`~anomaly_gym.detectors.active.run_discovery`); the
record is the number of anomalies found after 10, 25, 50, ... queries.  The meta-policy
never trains on its target: the datasets are split into ``folds`` dataset-level folds by
the main benchmark's rule (:func:`dataset_folds`: versions of one original dataset share a
fold) and the policy that serves a fold's targets is trained on the other folds' datasets
only.

Methods: ``meta-policy`` (trained here), ``random``, ``iforest`` and ``zero-shot`` (the
shipped detection policy's ranking; both ignore the answers), ``aad`` (Das et al. 2016 on
IForest leaves), ``active-learning`` (a logistic head refitted every 10 answers) and
``feedback-greedy`` (the meta-policy's untrained starting point: the same candidate pool,
always the candidate with the highest ``feedback/learned_score``; what meta-training adds
is the difference to it).

Outputs in ``out``: ``results.csv`` (one row per target, method and seed), ``curves.csv``
(the cumulative anomalies found after each query), ``summary.md`` (per-target means over
seeds, wins/ties/losses and Wilcoxon p of the meta-policy against every baseline at every
reported budget), ``curves.png`` (mean discovery curves), ``folds.json`` (each target's
fold, each fold's sources, the groups) and ``models/fold*.bundle.zip``.  Rerunning with the
same ``out`` reuses the trained folds and the finished rows; where the fold plan changed
(other datasets, another rule), the meta-policy runs again on the targets whose policy's
sources changed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from anomaly_gym.agents.discover import DiscoverBundle
from anomaly_gym.detectors.active import (
    AADStrategy,
    ActiveLearningStrategy,
    ActiveStrategy,
    DiscoveryData,
    RandomStrategy,
    RankingStrategy,
    iforest_ranking,
    run_discovery,
)
from anomaly_gym.envs.discover import default_prior
from anomaly_gym.envs.features import FeaturizerConfig, featurize_task
from anomaly_gym.envs.tasks import Task
from anomaly_gym.meta.benchmark.protocol import check_not_trained_on
from anomaly_gym.meta.discover import (
    DiscoverTrainConfig,
    FeedbackGreedyStrategy,
    PolicyStrategy,
    default_discover_featurizer,
    train_discover_policy,
    zero_shot_ranking,
)

logger = logging.getLogger(__name__)

POLICY = "meta-policy"
BASELINES = ("random", "iforest", "zero-shot", "aad", "active-learning", "feedback-greedy")
METHODS = (POLICY, *BASELINES)


@dataclass(frozen=True)
class ActiveBenchmarkConfig:
    """Settings of :func:`run_active_benchmark`."""

    budget: int = 100
    """Queries per target and seed."""
    seeds: int = 3
    """Seeds 0..N-1 (the random pool slots, the forests, the random baseline)."""
    folds: int = 5
    """Dataset-level folds: the policy serving a fold never trained on its datasets."""
    methods: tuple[str, ...] = METHODS
    """Methods to run."""
    train: DiscoverTrainConfig = field(default_factory=DiscoverTrainConfig)
    """Meta-training of each fold's policy."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        if self.budget < 1 or self.seeds < 1:
            raise ValueError(f"budget and seeds must be positive, got {self.budget} and {self.seeds}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2 (the policy needs datasets to train on), got {self.folds}")

    def checkpoints(self) -> list[int]:
        """Query counts reported: 10, 25, 50, 100, ... up to the budget, and the budget itself."""
        points = [k for k in (10, 25, 50, 100, 200, 500) if k < self.budget]
        return [*points, self.budget]


def dataset_folds(tasks: Sequence[Task], folds: int, seed: int = 0) -> dict[str, int]:
    """Each dataset's fold, ``0`` .. ``folds - 1``: the main benchmark's rule (:func:`~anomaly_gym.meta.benchmark.protocol.plan_folds`).

    Every dataset is both a target and, in the other folds, a source.  Versions of one
    original dataset (the same family name such as ``CIFAR10_0`` / ``CIFAR10_4``, else
    the same width) share a fold, so there are fewer folds than asked for when there are
    fewer groups.
    """
    from anomaly_gym.meta.benchmark.protocol import plan_folds

    return {name: int(fold) - 1 for name, fold in plan_folds(tasks, tasks, folds, seed).items()}


def make_strategy(method: str, bundle: DiscoverBundle | None, budget: int, featurizer: FeaturizerConfig) -> ActiveStrategy:
    """The strategy behind a method name (``bundle`` is needed for the meta-policy)."""
    if method == POLICY:
        return PolicyStrategy(bundle, budget)
    if method == "feedback-greedy":
        return FeedbackGreedyStrategy(featurizer, budget)
    return {
        "random": RandomStrategy,
        "iforest": lambda: RankingStrategy(iforest_ranking, "iforest"),
        "zero-shot": lambda: RankingStrategy(zero_shot_ranking(), "zero-shot"),
        "aad": AADStrategy,
        "active-learning": ActiveLearningStrategy,
    }[method]()


def run_active_benchmark(
    tasks: Sequence[Task],
    out: str | Path,
    config: ActiveBenchmarkConfig | None = None,
    *,
    sources: Sequence[Task] = (),
    model: DiscoverBundle | None = None,
    featurizer: FeaturizerConfig | None = None,
    progress: Callable[[str], None] | None = None,
    only_folds: Sequence[int] | None = None,
):
    """Run the protocol on ``tasks`` (each both a target and, in the other folds, a source); returns the results frame.

    ``sources`` are tasks the policies train on but that are never targets: every fold's
    policy trains on them as well, except on those that are a version of one of the
    fold's targets (:func:`~anomaly_gym.meta.benchmark.protocol.same_dataset`: anomalies
    planted into a target's rows are that target).  ``model``: one trained discovery
    bundle serves every target instead (no folds are trained; a target among its training
    tasks becomes an error row).  ``only_folds`` runs those folds' targets only (to split a
    run across machines; the summary then covers what ``out`` holds).
    """
    import pandas as pd

    cfg = config or ActiveBenchmarkConfig()
    featurizer = featurizer or default_discover_featurizer()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [t.name for t in [*tasks, *sources]]
    if len(set(names)) != len(names):
        raise ValueError("target and source names must be unique")
    if len(tasks) < 2:
        raise ValueError(f"{len(tasks)} dataset(s) cannot fill two folds; the policy needs datasets to train on")
    fold_of = dataset_folds(tasks, cfg.folds)
    n_folds = len(set(fold_of.values()))
    if n_folds < cfg.folds and progress:
        progress(f"{n_folds} folds, not {cfg.folds}: versions of one original dataset share a fold (see folds.json)")
    pool = [*tasks, *sources]
    model_tasks = None if model is None else sorted(model.metadata.get("train_tasks", []))
    done = _resume(out, tasks, pool, fold_of, progress, model_tasks)
    features = {t.name: featurize_task(t, featurizer) for t in pool}
    results_path, curves_path = out / "results.csv", out / "curves.csv"
    for fold in range(n_folds):
        if only_folds is not None and fold not in only_folds:
            continue
        targets = [t for t in tasks if fold_of[t.name] == fold]
        todo = [(t, m, s) for t in targets for s in range(cfg.seeds) for m in cfg.methods if (t.name, m, s) not in done]
        if not todo:
            continue
        bundle = model
        if POLICY in cfg.methods and model is None:
            bundle = _fold_policy(out, fold, _sources_of(pool, tasks, fold_of, fold), features, featurizer, cfg, progress)
        for task, method, seed in todo:
            if progress:
                progress(f"fold {fold}: {task.name} seed {seed} {method}")
            row, curve = _run_one(task, features[task.name], featurizer, method, seed, bundle, cfg)
            row["fold"] = fold
            _append(results_path, [row])
            if curve is not None:
                _append(curves_path, [{"dataset": task.name, "method": method, "seed": seed, "query": i + 1, "found": int(c)} for i, c in enumerate(curve)])
    frame = pd.read_csv(results_path)
    write_summary(out, frame, cfg, model_tasks)
    if curves_path.is_file():
        plot_curves(out, pd.read_csv(curves_path))
    return frame


def _sources_of(pool: Sequence[Task], tasks: Sequence[Task], fold_of: dict[str, int], fold: int) -> list[Task]:
    """The tasks of ``pool`` that ``fold``'s policy trains on: none is a version of one of the fold's targets."""
    from anomaly_gym.meta.benchmark.protocol import fold_sources

    return fold_sources(pool, tasks, {name: str(f) for name, f in fold_of.items()}, str(fold))


def _resume(
    out: Path, tasks: Sequence[Task], pool: Sequence[Task], fold_of: dict[str, int], progress, model_tasks: list[str] | None = None
) -> set[tuple[str, str, int]]:
    """Record the fold plan in ``folds.json``; return the finished (dataset, method, seed) that still hold.

    A meta-policy row holds only if its target's policy was trained on the same sources as
    under this plan, or as ``model_tasks`` when one given bundle serves every target
    (``folds.json`` of the earlier run); the others are removed from
    ``results.csv`` and ``curves.csv`` and run again.  The baselines do not depend on the
    folds: their rows stay, with the ``fold`` column rewritten to this plan.
    """
    import pandas as pd
    from anomaly_gym.meta.benchmark.results import write_folds

    folds_path, results_path, curves_path = out / "folds.json", out / "results.csv", out / "curves.csv"
    plan = {name: str(fold) for name, fold in fold_of.items()}
    old = _policy_sources(folds_path)
    if model_tasks is None:
        new = {d: sorted(s.name for s in _sources_of(pool, tasks, fold_of, fold_of[d])) for d in plan}
    else:
        new = {d: list(model_tasks) for d in plan}
    done: set[tuple[str, str, int]] = set()
    if results_path.is_file():
        frame = pd.read_csv(results_path)
        gone = sorted({d for d in frame.loc[frame["method"] == POLICY, "dataset"] if old.get(d) is None or old.get(d) != new.get(d)})
        stale = (frame["method"] == POLICY) & frame["dataset"].isin(gone)
        refold = frame["dataset"].map(fold_of).fillna(frame["fold"]).astype(int)
        if gone:
            logger.warning("the fold plan changed: the meta-policy runs again on %s", gone)
            if progress:
                progress(f"the fold plan changed: the meta-policy runs again on {len(gone)} target(s)")
            if curves_path.is_file():
                curves = pd.read_csv(curves_path)
                _replace_csv(curves[~((curves["method"] == POLICY) & curves["dataset"].isin(gone))], curves_path)
        if gone or not refold.equals(frame["fold"]):
            frame = frame[~stale].assign(fold=refold[~stale])
            _replace_csv(frame, results_path)
        done = {(r.dataset, r.method, int(r.seed)) for r in frame.itertuples() if r.status == "ok"}
    extra = None if model_tasks is None else {"model_train_tasks": list(model_tasks)}
    write_folds(out, pool, tasks, plan, extra)  # last: a run killed before this point still finds the old plan
    return done


def _replace_csv(frame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def _policy_sources(path: Path) -> dict[str, list[str]]:
    """Per target, the sources its policy trains on, from ``folds.json`` (empty when there is none)."""
    import json

    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    if "model_train_tasks" in record:
        return {name: sorted(record["model_train_tasks"]) for name in record.get("target_fold", {})}
    folds = record.get("folds", {})
    return {name: sorted(folds.get(fold, {}).get("sources", [])) for name, fold in record.get("target_fold", {}).items()}


def _fold_policy(out: Path, fold: int, sources: list[Task], features: dict, featurizer, cfg, progress) -> DiscoverBundle:
    path = out / "models" / f"fold{fold}.bundle.zip"
    if path.is_file():
        bundle = DiscoverBundle.load(path)
        if set(bundle.metadata.get("train_tasks", [])) == {t.name for t in sources}:
            return bundle
    if progress:
        progress(f"fold {fold}: training on {len(sources)} datasets ({cfg.train.total_timesteps} steps)")
    bundle = train_discover_policy(
        sources, cfg.train, featurizer=featurizer, features=[features[t.name] for t in sources], run_dir=out / "runs" / f"fold{fold}"
    )
    bundle.save(path)
    return bundle


def _run_one(task: Task, feats: np.ndarray, featurizer, method: str, seed: int, bundle, cfg) -> tuple[dict, np.ndarray | None]:
    row = {"dataset": task.name, "method": method, "seed": seed, "n_rows": task.n_rows, "n_anomalies": task.n_anomalies}
    data = DiscoveryData(task.X, feats, default_prior(feats, featurizer))
    start = time.perf_counter()
    try:
        if method == POLICY:
            check_not_trained_on(bundle, task.name)
        labels = run_discovery(make_strategy(method, bundle, cfg.budget, featurizer), data, task.y, cfg.budget, seed)
    except Exception as exc:  # one failing method must not sink the benchmark: recorded as an error row
        logger.exception("%s on %s (seed %d) failed", method, task.name, seed)
        row.update({f"found@{k}": np.nan for k in cfg.checkpoints()}, seconds=np.nan, status="error", error=str(exc))
        return row, None
    curve = np.cumsum(labels)
    for k in cfg.checkpoints():
        row[f"found@{k}"] = int(curve[min(k, len(curve)) - 1])
    row.update(seconds=round(time.perf_counter() - start, 3), status="ok", error="")
    return row, curve


def _append(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, mode="a", header=not path.is_file(), index=False)


def summary_tables(frame, cfg: ActiveBenchmarkConfig) -> dict[int, object]:
    """Per reported budget: per target (rows) and method (columns), the mean found over seeds."""
    ok = frame[frame["status"] == "ok"]
    return {k: ok.pivot_table(index="dataset", columns="method", values=f"found@{k}", aggfunc="mean") for k in cfg.checkpoints()}


def compare(table, baseline: str) -> dict[str, float]:
    """Wins/ties/losses of the meta-policy against ``baseline`` over targets, and the Wilcoxon signed-rank p."""
    from scipy.stats import wilcoxon

    pair = table[[POLICY, baseline]].dropna()
    diff = pair[POLICY] - pair[baseline]
    wins, ties, losses = int((diff > 1e-9).sum()), int((diff.abs() <= 1e-9).sum()), int((diff < -1e-9).sum())
    p = float("nan")
    if wins + losses > 0:
        p = float(wilcoxon(pair[POLICY], pair[baseline], zero_method="wilcox").pvalue)
    return {"wins": wins, "ties": ties, "losses": losses, "p": p, "mean_diff": float(diff.mean())}


def write_summary(out: Path, frame, cfg: ActiveBenchmarkConfig, model_tasks: list[str] | None = None) -> None:
    """``summary.md``: per-budget tables, comparisons, and the share of targets where the policy beats every baseline.

    ``model_tasks``: the training tasks of the one bundle that served every target (``None``: one policy per fold).
    """
    tables = summary_tables(frame, cfg)
    how = (
        f"{cfg.folds} dataset-level folds (each fold's policy trained only on the other folds' datasets, {cfg.train.total_timesteps} steps)"
        if model_tasks is None
        else f"one given discovery bundle for every target (trained on {len(model_tasks)} datasets; a target among them is an error row)"
    )
    lines = ["# Active discovery benchmark", "", f"Budget {cfg.budget}, seeds {cfg.seeds}, {how}.", ""]
    for k, table in tables.items():
        methods = [m for m in METHODS if m in table.columns]
        table = table[methods]
        lines += [f"## Anomalies found after {k} queries (mean over seeds)", "", "| dataset | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for name, row in table.iterrows():
            lines.append(f"| {name} | " + " | ".join(f"{row[m]:.1f}" for m in methods) + " |")
        lines.append("| **mean** | " + " | ".join(f"**{table[m].mean():.2f}**" for m in methods) + " |")
        lines.append("")
        if POLICY in methods:
            baselines = [m for m in methods if m != POLICY]
            lines += ["| meta-policy vs | wins | ties | losses | mean diff | Wilcoxon p |", "|---|---|---|---|---|---|"]
            for b in baselines:
                c = compare(table, b)
                lines.append(f"| {b} | {c['wins']} | {c['ties']} | {c['losses']} | {c['mean_diff']:+.2f} | {c['p']:.3g} |")
            if baselines:
                lines += ["", _lead_line(table, baselines, ceilings(frame, k).reindex(table.index))]
            lines.append("")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def ceilings(frame, k: int):
    """Per target, the most anomalies any method can find in ``k`` queries: ``min(anomalies, k)``."""
    ok = frame[frame["status"] == "ok"]
    return ok.groupby("dataset")["n_anomalies"].min().clip(upper=k)


def _lead_line(table, baselines: list[str], ceiling) -> str:
    """The share of targets where the policy is above every baseline, and where no method can be (the best baseline at the ceiling)."""
    best = table[baselines].max(axis=1)
    ahead = table[POLICY] > best + 1e-9
    open_ = best < ceiling - 1e-9  # where some method could still find more than the best baseline
    line = (
        f"Meta-policy above every baseline on {float(ahead.mean()):.0%} of {len(table)} targets "
        f"(at least tied with the best on {float((table[POLICY] >= best - 1e-9).mean()):.0%})."
    )
    shut = int((~open_).sum())
    if shut:
        line += (
            f" On {shut} of them the best baseline found every anomaly it could (all of them, or one per query), so no method can be"
            f" ahead there; on the other {int(open_.sum())} the policy is above every baseline on {int((ahead & open_).sum())}."
        )
    return line


def plot_curves(out: Path, curves) -> None:
    """``curves.png``: per method, the anomalies found after each query (mean over targets and seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a target with fewer rows than the budget stops early: it keeps what it found
    wide = curves.pivot_table(index=["method", "dataset", "seed"], columns="query", values="found").ffill(axis=1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(curves["method"]):
        mean = wide.loc[method].mean(axis=0)
        ax.plot(mean.index, mean.values, label=method)
    ax.set_xlabel("queries")
    ax.set_ylabel("anomalies found (mean over targets and seeds)")
    ax.set_title("Active discovery on held-out datasets")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)


def config_dict(cfg: ActiveBenchmarkConfig) -> dict:
    """The configuration as plain data (for the run record)."""
    return dataclasses.asdict(cfg)
