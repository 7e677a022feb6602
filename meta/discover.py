"""Meta-training the discovery policy across source tasks, and serving it as a strategy.

:func:`train_discover_policy` trains sb3-contrib's ``MaskablePPO`` with
:class:`~anomaly_gym.agents.discover.CandidatePolicy` on ``AnomalyGym/Discover-v1``, each
episode on a source task drawn at random, and returns a
:class:`~anomaly_gym.agents.discover.DiscoverBundle`.  With a ``run_dir`` it writes
TensorBoard events: SB3's ``rollout/`` and ``train/`` tags, and ``discover/found@K``,
the mean number of anomalies found after K queries in the episodes of the last rollout.

:class:`PolicyStrategy` plays a trained bundle through the interface of the baselines in
:mod:`anomaly_gym.detectors.active`, on a target whose labels it only learns one answer at
a time (through :class:`~anomaly_gym.envs.discover.DiscoverySession`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from anomaly_gym.agents.discover import ENV_SETTINGS, DiscoverBundle, make_discover_agent
from anomaly_gym.agents.factory import resolve_device
from anomaly_gym.detectors.active import ActiveStrategy, DiscoveryData
from anomaly_gym.envs.discover import FEEDBACK_FEATURES, DiscoverEnv, DiscoverySession, percentile_columns, raw_embedding
from anomaly_gym.envs.features import FeaturizerConfig
from anomaly_gym.envs.tasks import Task
from stable_baselines3.common.callbacks import BaseCallback

logger = logging.getLogger(__name__)

#: Query counts reported as ``discover/found@K``.
FOUND_AT = (10, 25, 50, 100)


@dataclass(frozen=True)
class DiscoverTrainConfig:
    """Settings of :func:`train_discover_policy`."""

    total_timesteps: int = 100_000
    """Environment steps (queries) of training in all."""
    n_envs: int = 8
    """Environments stepped together."""
    budget: int = 100
    """Queries per episode."""
    pool_size: int = 64
    """Candidates per step (the action space)."""
    random_share: float = 0.25
    """Share of random rows in the candidate pool."""
    normal_reward: float = -1.0
    """Reward for showing a normal row (Meta-AAD: -0.1)."""
    similarity_scale: float = 0.1
    """Scale of the similarity feedback features."""
    raw_neighbours: bool = True
    """Feedback features and pool refills from the distances between raw rows (see ``DiscoverEnv``)."""
    hidden: int = 64
    """Width of the candidate scorer."""
    feedback_only: bool = True
    """The scorer's network reads only the feedback features (the linear start reads all columns)."""
    heuristic_weight: float = 50.0
    """The untrained policy's logit is this times ``feedback/learned_score`` (0: start uniform)."""
    n_steps: int = 200
    """Steps per environment per PPO rollout."""
    batch_size: int = 400
    """PPO minibatch size."""
    n_epochs: int = 5
    """PPO epochs per rollout."""
    learning_rate: float = 3e-4
    """Adam's learning rate."""
    gamma: float = 0.99
    """Discount factor."""
    ent_coef: float = 0.01
    """Entropy bonus."""
    pretrain_rounds: int = 4
    """DAgger rounds of supervised pretraining before PPO (0: PPO only; see :mod:`~anomaly_gym.meta.discover_pretrain`)."""
    pretrain_episodes: int = 2
    """Episodes per source task and pretraining round."""
    pretrain_epochs: int = 4
    """Passes over the gathered states after each pretraining round."""
    seed: int = 0
    """Seed of the agent and the environments."""
    device: str = "auto"
    """``cpu``, ``cuda`` or ``auto``."""

    def env_settings(self) -> dict:
        return {k: getattr(self, k) for k in ENV_SETTINGS}


class FoundCallback(BaseCallback):
    """Logs ``discover/found@K``: mean anomalies found after K queries, over the episodes of each rollout."""

    def __init__(self, found_at: Sequence[int] = FOUND_AT) -> None:
        super().__init__()
        self.found_at = tuple(found_at)
        self.records: dict[int, list[int]] = {k: [] for k in self.found_at}
        self.history: list[dict[str, float]] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            queries = info.get("queries")
            if queries in self.records:
                self.records[queries].append(int(info["found"]))
        return True

    def _on_rollout_end(self) -> None:
        row = {}
        for k, values in self.records.items():
            if values:
                row[f"discover/found@{k}"] = float(np.mean(values))
                self.logger.record(f"discover/found@{k}", row[f"discover/found@{k}"])
            values.clear()
        if row:
            row["timesteps"] = float(self.num_timesteps)
            self.history.append(row)


def train_discover_policy(
    tasks: Sequence[Task],
    config: DiscoverTrainConfig | None = None,
    *,
    featurizer: FeaturizerConfig | None = None,
    features: Sequence[np.ndarray] | None = None,
    priors: Sequence[np.ndarray] | None = None,
    run_dir: str | Path | None = None,
) -> DiscoverBundle:
    """Meta-train a discovery policy on ``tasks``; returns its bundle (also saved in ``run_dir``)."""
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    cfg = config or DiscoverTrainConfig()
    featurizer = featurizer or FeaturizerConfig()
    device = resolve_device(cfg.device)
    if device == "cpu":
        torch.set_num_threads(1)
    probe = DiscoverEnv(tasks, featurizer=featurizer, features=features, priors=priors, **cfg.env_settings())
    data = {t.hash: probe.task_data(t) for t in tasks}

    def make(i: int):
        def build() -> DiscoverEnv:
            env = DiscoverEnv(
                tasks,
                featurizer=featurizer,
                resample_task_on_reset=True,
                **cfg.env_settings(),
                features=[data[t.hash][0] for t in tasks],
                priors=[data[t.hash][1] for t in tasks],
            )
            env.reset(seed=cfg.seed * 1000 + i)
            return env

        return build

    env = VecMonitor(DummyVecEnv([make(i) for i in range(cfg.n_envs)]))
    env.seed(cfg.seed)
    column = len(featurizer.feature_names()) + FEEDBACK_FEATURES.index("feedback/learned_score")
    agent = make_discover_agent(
        env,
        hidden=cfg.hidden,
        heuristic_column=column if cfg.heuristic_weight else -1,
        heuristic_weight=cfg.heuristic_weight,
        seed=cfg.seed,
        tail_columns=len(FEEDBACK_FEATURES) if cfg.feedback_only else 0,
        device=device,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        learning_rate=cfg.learning_rate,
        gamma=cfg.gamma,
        ent_coef=cfg.ent_coef,
    )
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        agent.set_logger(configure(str(run_dir), ["tensorboard", "csv"]))
    losses = []
    if cfg.pretrain_rounds:
        from anomaly_gym.meta.discover_pretrain import PretrainConfig, pretrain_scorer

        pre = PretrainConfig(rounds=cfg.pretrain_rounds, episodes=cfg.pretrain_episodes, epochs=cfg.pretrain_epochs, gamma=cfg.gamma)
        losses = pretrain_scorer(agent, probe, list(tasks), pre, seed=cfg.seed, progress=logger.info)
    callback = FoundCallback()
    if cfg.total_timesteps:
        agent.learn(total_timesteps=cfg.total_timesteps, callback=callback)
    metadata = {"train_tasks": [t.name for t in tasks], "config": dataclasses.asdict(cfg), "found_history": callback.history[-20:], "pretrain_losses": losses}
    bundle = DiscoverBundle(agent, featurizer, cfg.env_settings(), metadata)
    if run_dir is not None:
        bundle.save(run_dir / "discover.bundle.zip")
    return bundle


def default_discover_featurizer() -> FeaturizerConfig:
    """The shipped detection policy's featurizer config: discovery policies read the same features (and its zero-shot ranking)."""
    from anomaly_gym.agents.bundle import load_default_bundle

    return load_default_bundle(device="cpu").featurizer_config


def train_discover_bundle(
    sources: Sequence[str],
    config: DiscoverTrainConfig | None = None,
    *,
    max_rows: int = 2000,
    run_dir: str | Path | None = None,
    progress=None,
) -> DiscoverBundle:
    """Train one discovery policy on every labelled task of the source specs (``builtin``, folders, ``planted:...``).

    Tasks above ``max_rows`` rows are subsampled (stratified, seed 0), as the active
    protocol does; features come from :func:`default_discover_featurizer` and the disk cache.
    The datasets it trains on are in the bundle's ``metadata["train_tasks"]``.
    """
    from anomaly_gym.envs.features import featurize_task
    from anomaly_gym.envs.tasks import check_training_task, subsample
    from anomaly_gym.meta.benchmark.protocol import load_task_sets

    if max_rows < 20:
        raise ValueError(f"max_rows must be at least 20, got {max_rows}")
    tasks = [t for t in load_task_sets(list(sources)) if t.labelled]
    if not tasks:
        raise ValueError(f"no labelled task in {list(sources)}: a discovery policy learns from labelled source tasks")
    for task in tasks:
        check_training_task(task)
    tasks = [subsample(t, max_rows, 0) for t in tasks]
    featurizer = default_discover_featurizer()
    if progress:
        progress(f"featurizing {len(tasks)} source tasks")
    features = [featurize_task(t, featurizer) for t in tasks]
    if progress:
        progress(f"training on {len(tasks)} source tasks")
    return train_discover_policy(tasks, config, featurizer=featurizer, features=features, run_dir=run_dir)


class PolicyStrategy(ActiveStrategy):
    """A trained discovery policy behind the baselines' interface.

    It sees the target's transferable features and prior (``DiscoveryData.features`` must
    come from the bundle's featurizer config) and learns labels only through
    :meth:`observe`.
    """

    name = "meta-policy"

    def __init__(self, bundle: DiscoverBundle, budget: int | None = None) -> None:
        self.bundle = bundle
        self.budget = budget

    def start(self, data: DiscoveryData, seed: int = 0) -> None:
        super().start(data, seed)
        env = self.bundle.env_settings
        n_base = len(self.bundle.featurizer_config.feature_names())
        if data.features.shape[1] != n_base:
            raise ValueError(f"the policy reads {n_base} features per row (its featurizer config); got {data.features.shape[1]}")
        self.session_ = DiscoverySession(
            np.asarray(data.features, dtype=np.float32),
            np.asarray(data.prior, dtype=np.float64),
            percentile_columns(self.bundle.featurizer_config),
            budget=int(self.budget or env["budget"]),
            pool_size=int(env["pool_size"]),
            random_share=float(env["random_share"]),
            similarity_scale=float(env["similarity_scale"]),
            rng=self.rng_,
            raw=raw_embedding(data.X) if env["raw_neighbours"] else None,
        )
        self._slot = None

    def select(self) -> int:
        ses = self.session_
        self._slot = self.bundle.choose(ses.observation(), ses.action_masks())
        return ses.row(self._slot)

    def observe(self, index: int, label: int) -> None:
        super().observe(index, label)
        ses = self.session_
        slot = self._slot if self._slot is not None and ses.action_masks()[self._slot] and ses.row(self._slot) == index else None
        if slot is None:
            raise ValueError(f"row {index} is not the candidate the policy chose; call select() and answer for its row")
        ses.reveal(slot, label)
        self._slot = None


class FeedbackGreedyStrategy(ActiveStrategy):
    """The untrained starting point of the meta-policy: always the candidate with the highest ``feedback/learned_score``.

    Same pool and feedback features as the policy (a :class:`DiscoverySession` with
    Discover-v1's default settings), no network: comparing the two measures what
    meta-training adds.
    """

    name = "feedback-greedy"

    def __init__(self, featurizer: FeaturizerConfig, budget: int = 100, pool_size: int = 64, random_share: float = 0.25, raw_neighbours: bool = True) -> None:
        self.featurizer = featurizer
        self.raw_neighbours = raw_neighbours
        self.budget = budget
        self.pool_size = pool_size
        self.random_share = random_share

    def start(self, data: DiscoveryData, seed: int = 0) -> None:
        super().start(data, seed)
        self.session_ = DiscoverySession(
            np.asarray(data.features, dtype=np.float32),
            np.asarray(data.prior, dtype=np.float64),
            percentile_columns(self.featurizer),
            budget=self.budget,
            pool_size=self.pool_size,
            random_share=self.random_share,
            similarity_scale=0.1,
            rng=self.rng_,
            raw=raw_embedding(data.X) if self.raw_neighbours else None,
        )
        self._column = len(self.featurizer.feature_names()) + FEEDBACK_FEATURES.index("feedback/learned_score")

    def select(self) -> int:
        ses = self.session_
        self._slot = int(np.argmax(np.where(ses.action_masks(), ses.observation()[:, self._column], -np.inf)))
        return ses.row(self._slot)

    def observe(self, index: int, label: int) -> None:
        super().observe(index, label)
        self.session_.reveal(self._slot, label)


@functools.lru_cache(maxsize=1)
def _default_detection_bundle():
    from anomaly_gym.agents.bundle import load_default_bundle

    return load_default_bundle(device="cpu")


def zero_shot_ranking(bundle=None):
    """A score for :class:`~anomaly_gym.detectors.active.RankingStrategy`: a detection policy's P(anomaly).

    ``bundle`` is a detection :class:`~anomaly_gym.agents.bundle.PolicyBundle` (default the
    shipped one); ``DiscoveryData.features`` must come from its featurizer config.
    """
    if bundle is None:
        bundle = _default_detection_bundle()

    def score(data: DiscoveryData, seed: int) -> np.ndarray:
        return bundle.anomaly_proba(data.features)

    return score
