"""The benchmark run: :class:`BenchmarkConfig` in, ``results.csv``, ``summary.md`` and plots out.

:func:`run_benchmark` loads the datasets, checks the setup against what ``config.out``
already holds, plans the cells (target × method × seed, each under its settings) that are
not in ``results.csv`` yet, and runs them through an executor
(:mod:`anomaly_gym.meta.executors`): serially, over the machine's cores, or on a Ray
cluster.  With ``train_config``, the policies of the folds are trained first, one executor
item per fold, after the source tasks have been featurized once for every fold through the
same executor; the bundles land in ``OUT/models`` and every cell of a fold scores with its
fold's bundle.  With several workers the cells run largest first (rows × √columns ×
methods), so that no worker is left with a big one at the end.  Rows are appended to
``results.csv`` as cells finish; the report is written at the end, also after Ctrl-C.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomaly_gym.meta.benchmark.cells import Cell, CellContext, error_rows, featurize_source, run_cell
from anomaly_gym.meta.benchmark.policies import PolicySource, error_text
from anomaly_gym.meta.benchmark.protocol import (
    KNOWN_TWINS,
    POLICY_BACKED,
    Setting,
    applies,
    join_twins,
    load_task_sets,
    plan_folds,
    resolve_methods,
    settings_for,
    uses_labels,
)
from anomaly_gym.meta.benchmark.report import write_summary
from anomaly_gym.meta.benchmark.results import ResultsFile, check_setup, fold_order, load_results, write_folds

logger = logging.getLogger(__name__)


@dataclass
class BenchmarkConfig:
    """What one benchmark run compares, on what, and where it runs.

    Example:
        >>> cfg = BenchmarkConfig(sources=["builtin"], targets=["builtin"], datasets=["sklearn/wine-0"],
        ...                       methods=["iforest", "hbos"], seeds=1, out=Path("results-small"))
    """

    sources: Sequence[str]
    """Source specs: ``builtin``, folders of ADBench ``NAME.npz`` files or of ``NAME.csv.gz`` tables."""
    targets: Sequence[str]
    """Target specs, as ``sources``."""
    out: Path = Path("results")
    """Output folder; a rerun with the same folder resumes."""
    datasets: Sequence[str] | None = None
    """Only these target names (default: every target)."""
    protocol: str = "zero-shot"
    """``zero-shot``, ``few-shot`` or ``all``."""
    labels: Sequence[int] = (5, 10, 20)
    """Few-shot: numbers of labelled anomalies drawn from the training part."""
    label_ratios: Sequence[float] = ()
    """Few-shot: shares of the training part's anomalies to label."""
    seeds: int = 3
    """Seeds ``0..seeds-1`` of the split, the label draw and the methods."""
    methods: str | Sequence[str] | None = None
    """Method names or groups (``default``, ``gan``, ``spectral``); None: the default set."""
    model: Path | None = None
    """One trained policy bundle for every target."""
    train_config: Path | None = None
    """Train the policy with this TOML config, holding each target out by dataset-level folds."""
    folds: int = 5
    """Dataset-level folds for targets that are also sources (with ``train_config``)."""
    source_rows: int = 2000
    """Rows kept of each source dataset for the transfer baselines."""
    retry_errors: bool = False
    """Run again the rows recorded as errors."""
    device: str = "cpu"
    """Device of the policies' training and of the torch detectors: ``cpu``, ``cuda`` or ``auto``."""
    executor: str = "local"
    """Where the cells run: ``serial``, ``local`` (a process pool) or ``ray``."""
    workers: int | None = None
    """Cells in flight at once (default: the cores, or the Ray cluster's CPUs)."""
    address: str | None = None
    """Ray cluster to join: ``auto`` or ``HOST:PORT`` (default: a local Ray instance)."""
    twins: dict[str, str] = field(default_factory=lambda: dict(KNOWN_TWINS))
    """Pairs of names of one original dataset (:func:`~anomaly_gym.meta.benchmark.protocol.join_twins`): held out together."""
    progress: bool = True
    """Show a progress bar."""
    command: str | None = None
    """The command line recorded in ``run.json`` (the CLI sets it)."""


@dataclass
class BenchmarkResults:
    """What a run left in ``out``."""

    out: Path
    """The output folder."""
    ran: int = 0
    """Rows written by this run."""
    retried: int = 0
    """Error rows dropped to be run again (``retry_errors``)."""
    skipped: int = field(default=0)
    """Rows already in ``results.csv`` and not run again."""

    @property
    def results_csv(self) -> Path:
        return self.out / "results.csv"

    @property
    def summary(self) -> Path:
        return self.out / "summary.md"

    def frame(self):
        """``results.csv`` as a pandas DataFrame."""
        return load_results(self.results_csv)


@dataclass
class _Setup:
    sources: list
    all_targets: list
    targets: list
    settings: list[Setting]
    methods: list[str]
    mode: str
    folds: dict[str, str]
    device: str
    twins: dict[str, str] = field(default_factory=dict)
    """The pairs of ``config.twins`` whose two names are both among the datasets."""


def run_benchmark(config: BenchmarkConfig, *, notify: Callable[[str], None] | None = None) -> BenchmarkResults:
    """Run the benchmark ``config`` describes; rows already in ``config.out/results.csv`` are skipped.

    Args:
        config: The run.
        notify: Called with one-line notes for the user (rows retried, nothing to run).

    Raises:
        ValueError, FileNotFoundError: Bad configuration or input (no row has been run).
        KeyboardInterrupt: After the rows finished so far are saved and the summary written.
    """
    notify = notify or logger.info
    setup = _prepare(config)
    out = Path(config.out)
    check_setup(out, _setup_record(config, setup), out / "results.csv")
    results = ResultsFile(out / "results.csv")
    outcome = BenchmarkResults(out)
    if config.retry_errors:
        outcome.retried = results.drop_errors()
        if outcome.retried:
            notify(f"running again {outcome.retried} row(s) recorded as errors")
    specs, copies, total = _plan(setup, config.seeds, results)
    outcome.skipped = len(results.rows)
    if setup.mode == "train":
        write_folds(out, setup.sources, setup.all_targets, setup.folds)
    if total == 0:
        notify(f"nothing to run: every row is already in {results.path}")
        write_summary(out)
        return outcome
    try:
        outcome.ran = _execute(config, setup, results, specs, copies, total)
    finally:
        try:
            write_summary(out)
        except Exception as exc:  # never hide the run's own outcome behind a summary failure
            logger.error("could not write the summary: %s", error_text(exc))
    return outcome


def _prepare(config: BenchmarkConfig) -> _Setup:
    """Check the configuration and load the datasets (bad input raises before anything runs)."""
    from anomaly_gym.agents.factory import resolve_device
    from anomaly_gym.envs.tasks import check_training_task

    if not config.sources or not config.targets:
        raise ValueError("--sources and --targets are required (or --summary-only)")
    if config.seeds < 1:
        raise ValueError(f"--seeds must be positive, got {config.seeds}")
    settings = settings_for(config.protocol, config.labels, config.label_ratios)
    methods = resolve_methods(config.methods, settings)
    if config.model is not None and config.train_config is not None:
        raise ValueError("give a policy bundle (--model) or a training config (--train-config), not both")
    if config.train_config is not None and not Path(config.train_config).is_file():
        raise FileNotFoundError(f"no such config file: {config.train_config}")
    if config.model is not None and not Path(config.model).is_file():
        raise FileNotFoundError(f"no such policy bundle: {config.model}")
    sources = load_task_sets(config.sources)
    all_targets = load_task_sets(config.targets)
    names = {n.lower() for t in sources + all_targets for n in (t.name, getattr(t, "dataset", t.name))}
    twins = {a: b for a, b in (config.twins or {}).items() if a.lower() in names and b.lower() in names}
    sources, all_targets = join_twins(sources, twins), join_twins(all_targets, twins)
    for task in all_targets:
        check_training_task(task)  # a target needs labels for AUROC and both classes
    targets = _select(all_targets, config.datasets)
    if config.train_config is not None:
        from anomaly_gym.meta.config import TrainConfig

        cfg = TrainConfig.from_toml(config.train_config)
        if cfg.datasets:  # the config's dataset selection narrows the sources (of every method)
            keep = {d.lower() for d in cfg.datasets}
            sources = [s for s in sources if s.name.lower() in keep]
    sources = [s for s in sources if s.labelled]
    if not sources:
        raise ValueError(f"no labelled source dataset in {list(config.sources)}")
    mode = "model" if config.model is not None else "train" if config.train_config is not None else "default"
    if mode == "default" and any(m in POLICY_BACKED for m in methods):
        from anomaly_gym.agents.bundle import default_bundle_path

        if not default_bundle_path().is_file():
            raise FileNotFoundError(
                "the 'policy' method needs a policy: pass --train-config CONFIG (trained here, each target held out) "
                "or --model BUNDLE, or leave 'policy' out of --methods (no default bundle is installed)"
            )
    folds = plan_folds(sources, all_targets, config.folds) if mode == "train" else {}
    device = resolve_device(config.device)  # 'cuda' without a GPU is a ValueError with the reason
    if device.startswith("cuda") and config.executor == "ray":
        raise ValueError("--device cuda runs with --executor local or serial; Ray cells run on CPUs")
    return _Setup(sources, all_targets, targets, settings, methods, mode, folds, device, twins)


def _select(all_targets: list, datasets: Sequence[str] | str | None) -> list:
    if not datasets:
        return all_targets
    wanted = [d.strip() for d in (datasets.split(",") if isinstance(datasets, str) else datasets) if d.strip()]
    by_name = {t.name.lower(): t for t in all_targets}
    missing = [d for d in wanted if d.lower() not in by_name]
    if missing:
        raise ValueError(f"dataset(s) {missing} not among the targets; the targets are {sorted(by_name)}")
    return [by_name[d.lower()] for d in dict.fromkeys(wanted)]


def _setup_record(config: BenchmarkConfig, setup: _Setup) -> dict:
    """What results in ``out`` depend on besides the row keys; a resumed run must match it.

    ``sources``, ``source_rows`` and ``holdout`` (which datasets are left out of a target's
    sources) shape every transfer and policy row; ``policy`` (the bundle, or the training
    config) shapes the policy rows only.
    """
    policy: dict[str, Any] = {"mode": setup.mode}
    if setup.mode == "model":
        policy["bundle_sha256"] = hashlib.sha256(Path(config.model).read_bytes()).hexdigest()
    elif setup.mode == "train":
        policy["config_sha256"] = hashlib.sha256(Path(config.train_config).read_bytes()).hexdigest()
    twins = {"twins": setup.twins} if setup.twins else {}  # absent when none applies: older runs stay resumable
    return twins | {
        "sources": {s.name: s.hash for s in setup.sources},
        "targets": {t.name: t.hash for t in setup.targets},
        "holdout": {"folds": config.folds, "target_fold": setup.folds} if setup.mode == "train" else "target",
        "policy": policy,
        "source_rows": config.source_rows,
        "commands": [c for c in [config.command] if c],
    }


def _plan(setup: _Setup, seeds: int, results: ResultsFile) -> tuple[list[Cell], list[dict], int]:
    """(cells to run, rows copied from finished ones, rows in all), fold by fold, then by target and seed.

    A label-free method's row under one setting is its row under every setting (same split,
    same fit), so a finished one is copied rather than run again.  The transfer baselines of
    a target and seed share one cell: they share the target's featurization.
    """
    from anomaly_gym.detectors import DETECTORS

    fold_of = (lambda name: setup.folds.get(name, "all")) if setup.mode == "train" else (lambda name: setup.mode)
    cells, copies = [], []
    for task in setup.targets:
        for seed in range(seeds):
            groups: dict[str, list[tuple[Setting, str]]] = {}
            for s in setup.settings:
                for m in setup.methods:
                    if not applies(m, s) or (task.name, m, s.protocol, s.labels, seed) in results:
                        continue
                    done = None if uses_labels(m) else results.earlier(task.name, m, seed)
                    if done is not None:
                        copies.append({**done, "method": m, "protocol": s.protocol, "labels": s.labels, "seed": seed})
                        continue
                    transfer = m not in POLICY_BACKED and DETECTORS[m].uses_source
                    groups.setdefault("transfer" if transfer else m, []).append((s, m))
            cells += [Cell(task.name, seed, tuple(p), fold_of(task.name)) for p in groups.values()]
    cells.sort(key=lambda c: (fold_order(c.fold), c.dataset.lower(), c.seed))  # stable: methods keep their order
    return cells, copies, len(copies) + sum(len(c.pairs) for c in cells)


def _with_policies(cells: list[Cell], policies: PolicySource) -> Iterator[Cell]:
    """The cells, each policy cell with its bundle (trained when its fold's first cell is drawn) or the reason why not."""
    for cell in cells:
        if any(m in POLICY_BACKED for _, m in cell.pairs):
            bundle, error = policies.resolve(cell.dataset)
            cell = Cell(cell.dataset, cell.seed, cell.pairs, cell.fold, bundle, error)
        yield cell


def _execute(config: BenchmarkConfig, setup: _Setup, results: ResultsFile, cells: list[Cell], copies: list[dict], total: int) -> int:
    """Run ``cells`` through the configured executor, appending rows as they finish; return the rows written."""
    import json

    import torch
    from anomaly_gym.meta.executors import make_executor
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    out = Path(config.out)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    workers = config.workers if config.workers is not None or config.executor != "local" else min(len(cells) or 1, _cores())
    start = "spawn" if setup.device.startswith("cuda") and config.executor == "local" else None
    ran = 0
    with threadpool_limits(limits=1), Progress(*columns, disable=not config.progress, transient=False) as bar:
        job = bar.add_task("benchmark", total=total)
        for row in copies:
            results.add(row)
        ran += len(copies)
        bar.advance(job, len(copies))
        policies = PolicySource(
            setup.mode,
            out=out,
            model=config.model,
            config=config.train_config,
            source_specs=config.sources,
            sources=setup.sources,
            targets=setup.all_targets,
            folds=setup.folds,
            progress=lambda text: bar.update(job, description=text),
            device=setup.device,
        )
        context = CellContext({t.name: t for t in setup.targets}, setup.sources, setup.all_targets, setup.folds, setup.mode, config.source_rows, setup.device)
        executor = make_executor(config.executor, workers=workers, address=config.address, start_method=start)
        with executor:
            policies.train(executor, [c.fold for c in cells if any(m in POLICY_BACKED for _, m in c.pairs)])
            _prefeaturize(executor, cells, context, lambda text: bar.update(job, description=text))
            if executor.workers > 1:  # the largest cells first, so that no worker is left with a big one at the end
                cells = sorted(cells, key=lambda c: -_cost(context.targets[c.dataset], c))
            with closing(executor.map(run_cell, _with_policies(cells, policies), context)) as outcomes:
                for outcome in outcomes:
                    cell = outcome.item
                    rows = outcome.value.rows if outcome.ok else error_rows(cell, outcome.error)
                    for row in rows:
                        results.add(row)
                    if outcome.ok and outcome.value.policy_log:
                        with (out / "policies.jsonl").open("a") as fh:
                            fh.writelines(json.dumps(r, default=str) + "\n" for r in outcome.value.policy_log)
                    ran += len(rows)
                    methods = ", ".join(dict.fromkeys(m for _, m in cell.pairs))
                    bar.update(job, advance=len(rows), description=f"{cell.dataset} seed {cell.seed}: {methods}")
    return ran


def _prefeaturize(executor, cells: list[Cell], context: CellContext, describe: Callable[[str], None]) -> None:
    """With several workers, featurize the transfer baselines' sources once each, spread over the workers.

    Each worker would otherwise featurize every source itself for its first transfer cell.
    A failure here is only logged: the cells featurize again and record their own errors.
    """
    from anomaly_gym.detectors import DETECTORS

    widths = {s.n_features for s in context.sources}
    seeds = sorted(
        {
            c.seed
            for c in cells
            if any(m not in POLICY_BACKED and DETECTORS[m].uses_source for _, m in c.pairs) and widths != {context.targets[c.dataset].n_features}
        }
    )
    if executor.workers < 2 or not seeds:
        return
    describe(f"featurizing {len(context.sources)} source datasets for the transfer baselines")
    cost = [min(s.n_rows, context.source_rows) * max(1, s.n_features) for s in context.sources]
    items = sorted(((i, seed) for seed in seeds for i in range(len(context.sources))), key=lambda item: -cost[item[0]])
    with closing(executor.map(featurize_source, items, context)) as outcomes:
        for outcome in outcomes:
            if not outcome.ok:
                logger.warning("featurizing source %s failed: %s", context.sources[outcome.item[0]].name, outcome.error)


def _cost(task, cell: Cell) -> float:
    """A rough size of ``cell``'s work: the target's rows (for the training split) times its columns' square root, per method."""
    return min(task.n_rows, 10_000) * max(1, task.n_features) ** 0.5 * len(cell.pairs)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
