"""The policy bundles of the benchmark: one given bundle, the shipped one, or one trained per fold."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomaly_gym.meta.benchmark.protocol import check_not_trained_on, fold_sources


def error_text(exc: BaseException) -> str:
    """One line for the ``error`` column: the exception's type and message (a leak's message alone)."""
    from anomaly_gym.meta.benchmark.protocol import LeakError

    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, LeakError) else str(exc)
    return " ".join(text.split())


class PolicySource:
    """Which policy bundle scores which target, and the guards that keep targets out of training.

    Modes: ``"model"`` (one given bundle), ``"train"`` (one bundle per fold, trained from a
    config and cached in ``OUT/models``), ``"default"`` (the bundle shipped with the package).
    """

    def __init__(
        self,
        mode: str,
        *,
        out: Path,
        model: Path | None = None,
        config: Path | None = None,
        source_specs: Sequence[str] = (),
        sources: Sequence = (),
        targets: Sequence = (),
        folds: dict[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
        device: str = "cpu",
    ) -> None:
        self.mode = mode
        self.device = device
        self.out = Path(out)
        self.model = model
        self.config = config
        self.source_specs = list(source_specs)
        self.sources = list(sources)
        self.targets = list(targets)
        self.folds = folds or {}
        self.progress = progress or (lambda text: None)
        self._bundles: dict[str, Any] = {}
        self._errors: dict[str, str] = {}

    def fold_of(self, target: str) -> str:
        return self.folds.get(target, "all") if self.mode == "train" else self.mode

    def bundle_path(self, fold: str) -> Path:
        if self.mode == "model":
            return self.model
        if self.mode == "default":
            from anomaly_gym.agents.bundle import default_bundle_path

            return default_bundle_path()
        return self.out / "models" / (f"fold-{fold}.bundle.zip" if fold != "all" else "all-sources.bundle.zip")

    def bundle_for(self, target: str):
        """The bundle that scores ``target``; raises :class:`LeakError` if the target was trained on."""
        fold = self.fold_of(target)
        if fold not in self._bundles:
            self._bundles[fold] = self._train(fold) if self.mode == "train" else self._load(fold)
        bundle = self._bundles[fold]
        check_not_trained_on(bundle, target)
        return bundle

    def _load(self, fold: str):
        from anomaly_gym.agents import load_bundle

        path = self.bundle_path(fold)
        if not Path(path).is_file():
            raise FileNotFoundError(f"no policy bundle at {path}; pass --model BUNDLE or --train-config CONFIG, or leave 'policy' out of --methods")
        return load_bundle(path, device=self.device)

    def _fold_job(self, fold: str) -> FoldJob | None:
        """The training of ``fold``'s policy, or None when its bundle is already in ``OUT/models`` for this setup.

        Raises:
            ValueError: The fold leaves no source, or the bundle there was trained for another setup.
        """
        from anomaly_gym.meta.config import TrainConfig

        train_sources = fold_sources(self.sources, self.targets, self.folds, fold)
        held_out = sorted(t.name for t in self.targets if self.folds.get(t.name) == fold) if fold != "all" else []
        if not train_sources:
            raise ValueError(f"fold {fold} leaves no source dataset to train on; use more sources or more folds")
        base = TrainConfig.from_toml(self.config)
        data = base.to_dict()
        names = [s.name for s in train_sources]
        data.update(sources=self.source_specs, datasets=names, device=self.device)
        if isinstance(base.val_tasks, (list, tuple, str)):
            wanted = [base.val_tasks] if isinstance(base.val_tasks, str) else list(base.val_tasks)
            kept = [v for v in wanted if v in names]
            data["val_tasks"] = kept if kept else 0.2
        cfg = TrainConfig.from_dict(data)
        path = self.bundle_path(fold)
        record_path = path.with_name(path.name.replace(".bundle.zip", ".json"))
        record = json.loads(json.dumps({"fold": fold, "held_out": held_out, "sources": names, "config": cfg.to_dict()}))
        old = json.loads(record_path.read_text()) if record_path.is_file() else None
        if path.is_file():
            if old != record:
                raise ValueError(
                    f"{path} was trained for another setup (sources, held-out datasets or config differ); use another --out, or delete it to train again"
                )
            return None
        run_path = self.out / "models" / path.name.replace(".bundle.zip", "")
        resume = (run_path / "checkpoints" / "last.zip").is_file() and old == record
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=2))
        return FoldJob(fold, cfg.to_dict(), run_path, resume)

    def train(self, executor, folds: Sequence[str]) -> None:
        """Train the policies of ``folds`` not yet in ``OUT/models`` through ``executor``, one item per fold.

        The source tasks are featurized first, once for every fold, through the same
        executor (:mod:`anomaly_gym.meta.featurization`).  A fold that cannot be trained
        is remembered: its targets get error rows with the reason.
        """
        if self.mode != "train":
            return
        jobs = []
        for fold in dict.fromkeys(folds):
            try:
                job = self._fold_job(fold)
            except Exception as exc:
                self._errors[fold] = error_text(exc)
                continue
            if job is not None:
                jobs.append(job)
        if not jobs:
            return
        tasks = _load_training_tasks(jobs[0])
        self.progress(f"featurizing the sources of {len(jobs)} fold(s)")
        _featurize_folds(executor, jobs, tasks)
        self.progress(f"training the policies of {len(jobs)} fold(s), {executor.workers} at a time")
        from contextlib import closing

        with closing(executor.map(train_fold, jobs, context=tasks)) as outcomes:
            for outcome in outcomes:
                job = outcome.item
                if outcome.ok:
                    _write_atomically(self.bundle_path(job.fold), outcome.value)
                else:
                    self._errors[job.fold] = outcome.error

    def _train(self, fold: str):
        """The policy of ``fold``: trained by :meth:`train`, else here (or loaded from ``OUT/models``)."""
        from anomaly_gym.agents import load_bundle

        job = self._fold_job(fold)
        if job is not None:
            self.progress(f"training the policy of fold {fold}")
            _write_atomically(self.bundle_path(fold), train_fold(None, job))
        bundle = load_bundle(self.bundle_path(fold), device=self.device)
        for target in self.targets if fold != "all" else []:
            if self.folds.get(target.name) == fold:
                check_not_trained_on(bundle, target.name)  # a bug if it ever fires: the fold's targets were held out
        return bundle

    def resolve(self, target: str) -> tuple[str | None, str | None]:
        """(path of the bundle that scores ``target``, None), or (None, why there is none) for an error row."""
        fold = self.fold_of(target)
        if fold in self._errors:
            return None, self._errors[fold]
        try:
            self.bundle_for(target)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # no policy for this target is an error row, not the end of the run
            return None, error_text(exc)
        return str(self.bundle_path(self.fold_of(target))), None


@dataclass(frozen=True)
class FoldJob:
    """The training of one fold's policy: its config (as a dict), its run folder, and whether to resume there."""

    fold: str
    config: dict
    run_path: Path
    resume: bool = False


def train_fold(tasks: Sequence | None, job: FoldJob) -> bytes:
    """Train the policy of ``job`` single-threaded (``tasks``: the sources already loaded); the bytes of its best bundle."""
    from anomaly_gym.meta.config import TrainConfig
    from anomaly_gym.meta.training import MetaTrainer
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        trainer = MetaTrainer(TrainConfig.from_dict(job.config), job.run_path, resume=job.resume, tasks=tasks)
        trainer.log_setup()
        trainer.train(progress=False)
    return (job.run_path / "best.bundle.zip").read_bytes()


def _load_training_tasks(job: FoldJob) -> list:
    """The tasks of the folds' source specs, loaded once as :func:`~anomaly_gym.meta.training.load_sources` loads them."""
    from anomaly_gym.envs.sources import load_tasks
    from anomaly_gym.meta.config import TrainConfig

    cfg = TrainConfig.from_dict(job.config)
    return [t for spec in cfg.sources for t in load_tasks(spec, nan_policy=cfg.nan_policy)]


def _featurize_folds(executor, jobs: Sequence[FoldJob], tasks: Sequence) -> None:
    """Featurize what the folds' trainings need (each source once) into the feature cache; a failure is left to the folds."""
    import logging

    from anomaly_gym.meta.config import TrainConfig
    from anomaly_gym.meta.featurization import featurize_jobs, source_jobs
    from anomaly_gym.meta.sampler import TaskSampler
    from anomaly_gym.meta.training import load_sources

    needed, featurizer = {}, None
    for job in jobs:
        try:
            cfg = TrainConfig.from_dict(job.config)
            sampler = TaskSampler(load_sources(cfg, tasks), val_tasks=cfg.val_tasks, seed=cfg.seed)
        except ValueError:
            continue  # the fold's training reports it
        featurizer = cfg.featurizer
        for fj in source_jobs(sampler.train_tasks, sampler.val_tasks, cfg.val_seeds, max_rows=cfg.max_task_rows):
            needed[fj.key] = fj
    if not needed:
        return
    try:
        featurize_jobs(list(needed.values()), featurizer, executor=executor)
    except RuntimeError as exc:
        logging.getLogger(__name__).warning("%s; the folds featurize again", exc)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def held_out_bundles(
    config: Path,
    targets: Sequence,
    *,
    folds: int = 4,
    twins: dict[str, str] | None = None,
    out: Path = Path("results/held-out-policies"),
    executor=None,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """One policy per target, trained from ``config`` with the target held out: dataset-level cross-validation.

    The targets that are among the config's sources are cut into ``folds`` folds
    (:func:`~anomaly_gym.meta.benchmark.protocol.plan_folds`: versions of one dataset share a
    fold); the policy of a fold is trained on every source but the fold's targets and scores
    only them.  Targets that are not sources share one policy trained on every source.
    Bundles are kept in ``OUT/models`` and reused when the setup is the same.

    Args:
        config: A training config (TOML), as for ``anomaly-gym train``.
        targets: Tasks to score (each needs ``name``; the fold rule reads ``n_features`` and ``hash``).
        folds: Number of folds of the targets that are also sources.
        twins: ``{target: source}``: a source made from the same original data as a target
            under another name (a one-hot copy, a subsample), held out with that target.
        out: Folder of the fold bundles (``OUT/models``).
        executor: Runs the featurizations and the trainings (default: a local process pool).
        progress: Called with one line of text per stage.

    Returns:
        ``({target name: bundle}, {task name: fold})``; the plan includes the twins.
    """
    from anomaly_gym.meta.benchmark.protocol import join_twins, load_task_sets, plan_folds, same_dataset
    from anomaly_gym.meta.config import TrainConfig
    from anomaly_gym.meta.executors import make_executor

    cfg = TrainConfig.from_toml(config)
    sources = join_twins(load_task_sets(cfg.sources), twins)
    targets = join_twins(targets, twins)
    plan = plan_folds(sources, targets, folds)
    held = list(targets)
    for source in sources:  # the twins join their targets' folds (fold_sources drops them there)
        twin_of = [t for t in targets if plan[t.name] != "all" and same_dataset(source, t) and source.name != t.name]
        if twin_of and source.name not in plan:
            held.append(source)
            plan[source.name] = plan[twin_of[0].name]
    policies = PolicySource("train", out=out, config=config, source_specs=cfg.sources, sources=sources, targets=held, folds=plan, progress=progress)
    owned = executor is None
    executor = make_executor("local") if owned else executor
    try:
        policies.train(executor, sorted({plan[t.name] for t in targets}))
    finally:
        if owned:
            executor.close()
    return {t.name: policies.bundle_for(t.name) for t in targets}, plan
