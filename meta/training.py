"""Meta-training: one policy across many source tasks, validated zero-shot on held-out ones."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from anomaly_gym.agents.bundle import PolicyBundle
from anomaly_gym.agents.factory import ALGORITHMS, make_agent, resolve_device
from anomaly_gym.envs.sources import load_tasks
from anomaly_gym.envs.tasks import Task, subsample
from anomaly_gym.meta.config import TrainConfig
from anomaly_gym.meta.evaluate import evaluate_feature_columns, evaluate_iforest, evaluate_policy, mean_metric, prepare_validation
from anomaly_gym.meta.executors import Executor
from anomaly_gym.meta.featurization import featurize_jobs, source_jobs
from anomaly_gym.meta.reptile import Reptile
from anomaly_gym.meta.sampler import TaskSampler
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import TensorBoardOutputFormat, configure
from stable_baselines3.common.vec_env import VecMonitor

logger = logging.getLogger(__name__)


def load_sources(cfg: TrainConfig, tasks: Sequence[Task] | None = None) -> list[Task]:
    """The configured source tasks, filtered by ``cfg.datasets`` and subsampled to ``cfg.max_task_rows``.

    ``tasks``: the tasks of ``cfg.sources``, already loaded (as they are, not subsampled);
    by default they are loaded here.
    """
    if tasks is None:
        tasks = []
        for spec in cfg.sources:
            tasks += load_tasks(spec, nan_policy=cfg.nan_policy)
    tasks = list(tasks)
    if cfg.datasets:
        tasks = select_datasets(tasks, cfg.datasets, cfg.sources)
    tasks = [t for t in tasks if t.labelled]
    if not tasks:
        raise ValueError(f"no labelled tasks in sources {cfg.sources}; training needs labels")
    return [subsample(t, cfg.max_task_rows, cfg.seed) for t in tasks]


def select_datasets(tasks: Sequence[Task], datasets: Sequence[str], sources: Sequence[str] = ()) -> list[Task]:
    """The tasks named in ``datasets`` (case-insensitive), derived tasks only with their parent.

    A task made from another dataset (planted anomalies, ``task.parent``) is kept when its
    parent is named, and never without it: naming a derived task whose parent is left out
    (as a dataset-level fold does with a held-out dataset) drops it, so no policy trains on
    what was planted into a dataset it is tested on.

    Raises:
        ValueError: a name matches no task or parent, or every named task is a derived one
            whose parent is not named.
    """
    wanted = {d.lower() for d in datasets}
    found = {t.name.lower() for t in tasks} | {t.parent.lower() for t in tasks if t.parent}
    missing = sorted(wanted - found)
    if missing:
        raise ValueError(f"dataset(s) {missing} not found in sources {list(sources)}")
    kept = [t for t in tasks if (t.parent.lower() in wanted if t.parent else t.name.lower() in wanted)]
    dropped = [t.name for t in tasks if t.parent and t.name.lower() in wanted and t.parent.lower() not in wanted]
    if dropped:
        logger.info("left out %d derived task(s) whose parent dataset is not among the datasets", len(dropped))
        if not kept:
            raise ValueError(
                f"the datasets name only derived tasks (e.g. {dropped[0]!r}) whose parent datasets are left out; "
                "a derived task trains only with its parent: add the parent's source and name"
            )
    return kept


def make_run_path(cfg: TrainConfig) -> Path:
    """``run_dir/{name}__{seed}__{time}``; :class:`MetaTrainer` creates it once its setup has succeeded."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(cfg.run_dir) / f"{cfg.name}__{cfg.seed}__{stamp}"


def make_vec_env(tasks: Sequence[Task], cfg: TrainConfig, *, resample: bool = True, device: str = "cpu"):
    """The batched environment over ``tasks``: numpy on the CPU, torch tensors on a GPU."""
    from anomaly_gym.envs.vector import BatchedDetectEnv

    env = BatchedDetectEnv(
        list(tasks),
        n_envs=cfg.n_envs,
        episode_length=cfg.episode_length,
        anomaly_fraction=cfg.anomaly_fraction,
        featurizer=cfg.featurizer,
        resample_task_on_reset=resample,
        device=device,
    )
    env.seed(cfg.seed)
    # VecMonitor adds the episode records behind SB3's rollout/ep_rew_mean; attribute
    # access (set_task, get_task, ...) passes through to the batched environment.
    return VecMonitor(env)


def _callbacks(trainer: MetaTrainer) -> list[BaseCallback]:
    callbacks: list[BaseCallback] = [_MetaCallback(trainer)]
    if trainer.cfg.monotone:
        from anomaly_gym.agents.monotone import MonotoneLogitCallback, monotone_columns

        callbacks.append(MonotoneLogitCallback(monotone_columns(trainer.cfg.featurizer.feature_names())))
    return callbacks


class _MetaCallback(BaseCallback):
    """Per-task training reward, periodic validation and checkpoints, as SB3 callbacks do."""

    def __init__(self, trainer: MetaTrainer) -> None:
        super().__init__()
        self.trainer = trainer

    def _on_step(self) -> bool:
        tr = self.trainer
        for info, reward in zip(self.locals["infos"], self.locals["rewards"]):
            name = info.get("task")
            if name is not None:
                s = tr.reward_sums.setdefault(name, [0.0, 0])
                s[0] += float(reward)
                s[1] += 1
        n = self.num_timesteps
        if n - tr.last_eval >= tr.cfg.eval_every:
            tr.validate(n)
        if n - tr.last_checkpoint >= tr.cfg.checkpoint_every:
            tr.checkpoint(n)
        return True


class MetaTrainer:
    """Builds the task sampler, batched environment and agent for a :class:`TrainConfig`, and trains.

    Writes into ``run_path``: ``config.toml``, TensorBoard events (``rollout/``, ``train/``,
    ``meta/``, ``time/``), ``checkpoints/last.zip`` with ``state.json``, ``best.bundle.zip``
    (best mean validation AUROC) and ``final.bundle.zip``.

    Args:
        cfg: The run's configuration.
        run_path: The run folder (created once the setup has succeeded).
        resume: Continue from ``run_path/checkpoints/last.zip``.
        executor: Where the source tasks are featurized before training (an
            :class:`~anomaly_gym.meta.executors.Executor` or ``serial``/``local``/``ray``;
            see :mod:`anomaly_gym.meta.featurization`); features in the cache are reused.
        tasks: The tasks of ``cfg.sources``, already loaded (default: loaded here).
    """

    def __init__(
        self, cfg: TrainConfig, run_path: Path, *, resume: bool = False, executor: Executor | str = "serial", tasks: Sequence[Task] | None = None
    ) -> None:
        self.cfg = cfg
        self.run_path = Path(run_path)
        self.device = resolve_device(cfg.device)
        if self.device == "cpu":
            # The policy is small: one thread beats torch's default pool, which
            # oversubscribes cores shared with the environment and the featurizer.
            torch.set_num_threads(1)
        self.sampler = TaskSampler(load_sources(cfg, tasks), val_tasks=cfg.val_tasks, seed=cfg.seed)
        jobs = source_jobs(self.sampler.train_tasks, self.sampler.val_tasks, cfg.val_seeds, max_rows=cfg.max_task_rows)
        featurize_jobs(jobs, cfg.featurizer, executor=executor)  # into the feature cache, where the env and validation find them
        self.rng = np.random.default_rng(cfg.seed)
        self.env = make_vec_env(self.sampler.train_tasks, cfg, resample=cfg.meta == "multitask", device=self.device)
        self.val_items = prepare_validation(self.sampler.val_tasks, cfg.featurizer, cfg.val_seeds, max_rows=cfg.max_task_rows)
        self.reward_sums: dict[str, list] = {}
        self.best_auroc = -np.inf
        self.last_eval = 0
        self.last_checkpoint = 0
        self.history: list[dict] = []
        ckpt = self.run_path / "checkpoints" / "last.zip"
        if resume:
            if not ckpt.is_file():
                raise FileNotFoundError(f"nothing to resume in {self.run_path}: {ckpt} does not exist")
            self.agent = ALGORITHMS[cfg.algo].load(ckpt, env=self.env, device=self.device)
            state = json.loads((self.run_path / "checkpoints" / "state.json").read_text())
            self.best_auroc = state["best_auroc"]
            self.last_eval = self.last_checkpoint = state["num_timesteps"]
            self.history = state.get("history", [])
            self.rng = np.random.default_rng(cfg.seed + state["num_timesteps"])
        else:
            kwargs = dict(learning_rate=cfg.learning_rate, gamma=cfg.gamma)
            if cfg.algo in ("ppo", "a2c"):
                kwargs.update(n_steps=cfg.n_steps, ent_coef=cfg.ent_coef)
            if cfg.algo == "ppo":
                kwargs.update(batch_size=cfg.batch_size, n_epochs=cfg.n_epochs)
            if cfg.algo == "dqn":
                kwargs.update(batch_size=cfg.batch_size, learning_starts=min(1000, cfg.total_steps // 10), train_freq=4)
            policy_kwargs = {}
            if cfg.algo != "dqn" and cfg.weight_decay > 0:
                policy_kwargs = dict(optimizer_class=torch.optim.AdamW, optimizer_kwargs=dict(weight_decay=cfg.weight_decay))
            self.agent = make_agent(cfg.algo, self.env, net_arch=cfg.net_arch, device=self.device, seed=cfg.seed, policy_kwargs=policy_kwargs, **kwargs)
        # Only now, with the device, the sources and the agent ready, does the run folder
        # appear: a run that fails to start leaves nothing behind.
        self.run_path.mkdir(parents=True, exist_ok=resume)
        self.agent.set_logger(configure(str(self.run_path), ["tensorboard", "csv"]))
        self._t_start = time.perf_counter()
        self._steps_start = self.agent.num_timesteps

    # -- logging helpers ---------------------------------------------------------------
    def _tb_writer(self):
        for fmt in self.agent.logger.output_formats:
            if isinstance(fmt, TensorBoardOutputFormat):
                return fmt.writer
        return None

    def log_setup(self) -> dict:
        """Write the config and the reference detectors' validation metrics (once per run)."""
        (self.run_path / "config.toml").write_text(self.cfg.to_toml())
        writer = self._tb_writer()
        baselines = {"iforest": evaluate_iforest(self.val_items)} if self.val_items else {}
        if self.val_items:
            baselines.update(evaluate_feature_columns(self.val_items, self.cfg.featurizer))
        self.baselines = baselines
        if writer is not None:
            writer.add_text("config", "```toml\n" + self.cfg.to_toml() + "\n```", 0)
            writer.add_text(
                "tasks",
                f"train ({len(self.sampler.train_tasks)}): {', '.join(t.name for t in self.sampler.train_tasks)}\n\n"
                f"validation ({len(self.sampler.val_tasks)}): {', '.join(t.name for t in self.sampler.val_tasks)}",
                0,
            )
            if "iforest" in baselines:
                writer.add_scalar("meta/val_auroc_iforest", mean_metric(baselines["iforest"]), 0)
            writer.flush()
        return baselines

    # -- validation and checkpoints ----------------------------------------------------
    def validate(self, step: int) -> dict:
        self.last_eval = step
        log = self.agent.logger
        elapsed = time.perf_counter() - self._t_start
        log.record("time/steps_per_s", (step - self._steps_start) / max(elapsed, 1e-9))
        for name, (total, count) in sorted(self.reward_sums.items()):
            log.record(f"meta/train_reward/{name}", total / max(count, 1))
        self.reward_sums = {}
        if not self.val_items:
            log.dump(step)
            return {}
        metrics = evaluate_policy(self.agent, self.val_items)
        mean_auroc, mean_auprc = mean_metric(metrics, "auroc"), mean_metric(metrics, "auprc")
        log.record("meta/val_auroc", mean_auroc)
        log.record("meta/val_auprc", mean_auprc)
        for name, m in metrics.items():
            log.record(f"meta/val_auroc/{name}", m["auroc"])
            log.record(f"meta/val_auprc/{name}", m["auprc"])
        log.dump(step)
        self.history.append({"step": step, "val_auroc": mean_auroc, "val_auprc": mean_auprc})
        if mean_auroc > self.best_auroc:
            self.best_auroc = mean_auroc
            self.bundle(metrics).save(self.run_path / "best.bundle.zip")
        logger.info("step %d: validation AUROC %.4f (best %.4f)", step, mean_auroc, self.best_auroc)
        return metrics

    def bundle(self, metrics: dict | None = None) -> PolicyBundle:
        meta = {
            "train_tasks": [t.name for t in self.sampler.train_tasks],
            "val_tasks": [t.name for t in self.sampler.val_tasks],
            "seed": self.cfg.seed,
            "algo": self.cfg.algo,
            "meta_learner": self.cfg.meta,
            "num_timesteps": int(self.agent.num_timesteps),
            "config": self.cfg.to_dict(),
        }
        if metrics is not None:
            meta["val_metrics"] = metrics
            meta["val_auroc"] = mean_metric(metrics, "auroc")
        return PolicyBundle(self.agent, self.cfg.featurizer, meta)

    def checkpoint(self, step: int) -> Path:
        self.last_checkpoint = step
        folder = self.run_path / "checkpoints"
        folder.mkdir(exist_ok=True)
        self.agent.save(folder / "last.zip")
        state = {"num_timesteps": int(self.agent.num_timesteps), "best_auroc": float(self.best_auroc), "history": self.history}
        (folder / "state.json").write_text(json.dumps(state, indent=2))
        return folder / "last.zip"

    # -- training ----------------------------------------------------------------------
    def train(self, *, progress: bool = True) -> PolicyBundle:
        """Train up to ``cfg.total_steps`` steps; Ctrl-C writes a checkpoint and re-raises."""
        remaining = self.cfg.total_steps - self.agent.num_timesteps
        try:
            if remaining > 0:
                if self.cfg.meta == "multitask":
                    self.agent.learn(remaining, callback=_callbacks(self), reset_num_timesteps=False, progress_bar=progress)
                else:
                    self._train_reptile(remaining, progress)
        except KeyboardInterrupt:
            self.checkpoint(self.agent.num_timesteps)
            raise
        metrics = self.validate(self.agent.num_timesteps)
        self.checkpoint(self.agent.num_timesteps)
        final = self.bundle(metrics)
        final.save(self.run_path / "final.bundle.zip")
        if not (self.run_path / "best.bundle.zip").exists():
            final.save(self.run_path / "best.bundle.zip")
        return final

    def _point_at(self, task: Task) -> None:
        """Every sub-environment on ``task`` from now on (fresh episodes)."""
        self.env.set_task(task)
        self.agent._last_obs = self.env.reset()
        self.agent._last_episode_starts = np.ones(self.env.num_envs, dtype=bool)

    def _train_reptile(self, remaining: int, progress: bool) -> None:
        from rich.progress import Progress

        reptile = Reptile(self.agent, meta_lr=self.cfg.reptile_meta_lr)
        callback = _callbacks(self)
        target = self.agent.num_timesteps + remaining
        with Progress(disable=not progress) as bar:
            job = bar.add_task("reptile", total=remaining)
            while self.agent.num_timesteps < target:
                meta = reptile.clone()
                task = self.sampler.sample(1, self.rng)[0]
                inner = min(self.cfg.reptile_inner_steps, target - self.agent.num_timesteps)
                before = self.agent.num_timesteps
                adapted = reptile.adapt(lambda: self._point_at(task), inner, callback=callback)
                reptile.step(meta, adapted)
                self.agent.logger.record("meta/reptile_task", task.name, exclude=("tensorboard",))
                bar.advance(job, self.agent.num_timesteps - before)
