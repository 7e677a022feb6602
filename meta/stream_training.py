"""Meta-training a stream policy on ``AnomalyGym/Stream-v0`` across many series.

Multi-task: every parallel environment draws a fresh series (NAB files and synthetic ones)
each episode, and SB3's PPO (:func:`anomaly_gym.agents.make_agent`) learns one policy for
all of them.  As for tabular detection, the default policy is linear and monotone: its
anomaly logit may only rise with every deviation feature (and with the time since its own
last flag), which keeps it from fitting one corpus' quirks.  The trained policy is returned
as a :class:`~anomaly_gym.envs.stream_policy.StreamPolicy`, evaluated in numpy.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Sequence

import numpy as np
from anomaly_gym.envs.series import Series
from anomaly_gym.envs.stream_env import OBSERVATION_NAMES, StreamDetectionEnv
from anomaly_gym.envs.stream_policy import StreamPolicy, score_with_feedback
from anomaly_gym.envs.temporal import FREE_FEATURES, TemporalFeaturizer

logger = logging.getLogger(__name__)


def featurize_series(series: Sequence[Series]) -> list[np.ndarray]:
    """Temporal features of every row of each series (each row from the rows before it)."""
    out = []
    for s in series:
        values = s.values.reshape(s.n_rows, -1)
        out.append(TemporalFeaturizer(values.shape[1]).transform(values, s.timestamps))
    return out


def monotone_stream_columns() -> np.ndarray:
    """Observation columns the anomaly logit must not decrease in (all but the free ones)."""
    return np.array([i for i, n in enumerate(OBSERVATION_NAMES) if n not in FREE_FEATURES], dtype=np.int64)


def policy_from_model(model, metadata: dict | None = None) -> StreamPolicy:
    """The numpy :class:`StreamPolicy` of a trained SB3 PPO/A2C model on Stream-v0."""
    import torch

    policy = model.policy
    layers = [
        (m.weight.detach().cpu().numpy(), m.bias.detach().cpu().numpy()) for m in policy.mlp_extractor.policy_net.modules() if isinstance(m, torch.nn.Linear)
    ]
    w = policy.action_net.weight.detach().cpu().numpy()
    b = policy.action_net.bias.detach().cpu().numpy()
    layers.append(((w[1] - w[0])[None, :], np.array([b[1] - b[0]])))
    act = policy.mlp_extractor.policy_net
    activation = "relu" if any(isinstance(m, torch.nn.ReLU) for m in act.modules()) else "tanh"
    return StreamPolicy(layers=layers, activation=activation, metadata=dict(metadata or {}))


def train_stream_policy(
    series: Sequence[Series],
    *,
    features: Sequence[np.ndarray] | None = None,
    total_steps: int = 200_000,
    seed: int = 0,
    n_envs: int = 8,
    max_episode_steps: int | None = 2000,
    net_arch: list[int] | None = None,
    monotone: bool = True,
    profile: str = "standard",
    device: str = "cpu",
    **ppo_kwargs,
) -> StreamPolicy:
    """Meta-train a stream policy with PPO across ``series``.

    Args:
        series: Labelled training series (each with at least one window).
        features: Their precomputed temporal features (default: computed here).
        total_steps: PPO environment steps.
        seed: Seed of the environments and the agent.
        n_envs: Parallel environments, each drawing a new series every episode.
        max_episode_steps: Episode length cap (episodes start at a random row after
            the probationary period when the series is longer).
        net_arch: Hidden layers of the policy (default ``[]``: linear).
        monotone: Keep a linear policy's logit non-decreasing in every directed feature.
        profile: NAB profile of the reward.
        device: Torch device of PPO.
        **ppo_kwargs: Passed to SB3's PPO (``learning_rate``, ``n_steps``, ``gamma`` ...).
    """
    from anomaly_gym.agents import make_agent
    from anomaly_gym.agents.monotone import MonotoneLogitCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    train = [s for s in series if s.windows]
    if not train:
        raise ValueError("no training series has an anomaly window; the stream policy needs labelled anomalies")
    feats = list(features) if features is not None else featurize_series(train)
    if features is not None:
        feats = [f for s, f in zip(series, feats) if s.windows]
    arch = [] if net_arch is None else list(net_arch)

    def make(i):
        def thunk():
            return StreamDetectionEnv(train, features=feats, profile=profile, max_episode_steps=max_episode_steps, resample_series=True)

        return thunk

    venv = VecMonitor(DummyVecEnv([make(i) for i in range(n_envs)]))
    venv.seed(seed)
    kwargs = dict(n_steps=512, batch_size=2048, n_epochs=4, gamma=0.0, gae_lambda=1.0, learning_rate=3e-3, ent_coef=0.0)
    kwargs.update(ppo_kwargs)
    model = make_agent("ppo", venv, net_arch=arch, device=device, seed=seed, **kwargs)
    callbacks = [MonotoneLogitCallback(monotone_stream_columns())] if monotone and not arch else []
    t0 = time.perf_counter()
    model.learn(int(total_steps), callback=callbacks)
    elapsed = time.perf_counter() - t0
    logger.info("stream policy: %d steps in %.1fs on %d series", total_steps, elapsed, len(train))
    return policy_from_model(
        model,
        metadata={
            "train_series": [s.name for s in train],
            "seed": seed,
            "total_steps": int(total_steps),
            "profile": profile,
            "net_arch": arch,
            "monotone": bool(monotone and not arch),
            "train_seconds": round(elapsed, 1),
        },
    )


def score_series_with_policy(policy: StreamPolicy, features: Sequence[np.ndarray]) -> list[np.ndarray]:
    """P(anomaly) of every row of each series (from cached features, with the scorer's flag feedback)."""
    return [score_with_feedback(policy, f) for f in features]


def calibrate_threshold(policy: StreamPolicy, series: Sequence[Series], features: Sequence[np.ndarray], profile: str = "standard") -> float:
    """The best cut on the policy's score by NAB's corpus-wide sweep over ``series`` (one threshold for every stream).

    Sets ``policy.score_threshold`` to it and returns it.
    """
    from anomaly_gym.meta import nab

    scores = score_series_with_policy(policy, features)
    prepared = [nab.prepare_file(s.n_rows, s.windows, profile) for s in series]
    threshold, _ = nab.best_threshold(prepared, scores)
    policy.score_threshold = float(min(1.0, max(0.0, threshold)))
    return policy.score_threshold


def search_stream_policy(
    series: Sequence[Series],
    *,
    features: Sequence[np.ndarray] | None = None,
    iterations: int = 40,
    gate_rows: int = 100,
    seed: int = 0,
    profile: str = "standard",
) -> StreamPolicy:
    """A linear, monotone stream policy fitted by direct search on the NAB score of ``series``.

    The objective is what NAB ranks by: the normalised score of all the series together at
    the best corpus-wide threshold (one cut for every stream), of the policy's gated score
    (:func:`~anomaly_gym.envs.stream_policy.rising_gate`, ``gate_rows``).  A (1+1) evolution
    strategy changes one weight (or the bias) at a time, multiplicatively, keeping every
    directed feature's weight non-negative, and keeps a change that does not lower the
    objective.  Each step scores every row at once (numpy), so ``iterations`` of 40 take
    about a minute on the NAB files plus 60 synthetic series.

    Args:
        series: Labelled training series; those without windows still count (their false positives).
        features: Their precomputed temporal features (default: computed here).
        iterations: Search steps.
        gate_rows: See :class:`~anomaly_gym.envs.stream_policy.StreamPolicy`.
        seed: Seed of the search.
        profile: NAB profile of the objective.
    """
    from anomaly_gym.envs.stream_policy import rising_gate
    from anomaly_gym.meta import nab

    if not any(s.windows for s in series):
        raise ValueError("no training series has an anomaly window; the stream policy needs labelled anomalies")
    feats = [np.asarray(f, dtype=np.float64) for f in (features if features is not None else featurize_series(series))]
    width = len(OBSERVATION_NAMES) - 1  # the policy's own since_flag feature keeps weight 0: no feedback
    free = {i for i, n in enumerate(OBSERVATION_NAMES[:width]) if n in FREE_FEATURES}
    prepared = [nab.prepare_file(s.n_rows, s.windows, profile) for s in series]
    null, perfect = nab.null_score(prepared), nab.perfect_score(prepared)

    def objective(w: np.ndarray, b: float) -> float:
        scores = [rising_gate(1.0 / (1.0 + np.exp(-np.clip(f[:, :width] @ w + b, -700, 700))), gate_rows) for f in feats]
        return nab.normalized(nab.best_threshold(prepared, scores)[1], null, perfect)

    rng = np.random.default_rng(seed)
    w = np.array([0.0 if i in free else 0.3 for i in range(width)])
    b = -4.0
    best = objective(w, b)
    t0 = time.perf_counter()
    for _ in range(int(iterations)):
        w2, b2 = w.copy(), b
        j = int(rng.integers(width + 1))
        if j == width:
            b2 = b + rng.normal()
        elif j in free:
            w2[j] += rng.normal()
        else:
            w2[j] = max(0.0, w[j] * math.exp(0.7 * rng.normal()) + 0.1 * rng.normal())
        value = objective(w2, b2)
        if value >= best:
            best, w, b = value, w2, b2
    elapsed = time.perf_counter() - t0
    logger.info("stream policy: NAB search, %d steps in %.1fs, training score %.1f", iterations, elapsed, best)
    layer = (np.append(w, 0.0)[None, :], np.array([b]))
    return StreamPolicy(
        layers=[layer],
        gate_rows=gate_rows,
        metadata={
            "train_series": [s.name for s in series],
            "seed": seed,
            "trainer": "search",
            "iterations": int(iterations),
            "profile": profile,
            "train_nab_score": round(float(best), 2),
            "train_seconds": round(elapsed, 1),
        },
    )


def window_rows(series: Sequence[Series], features: Sequence[np.ndarray], profile: str = "standard") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, labels and weights of NAB's standard-profile trade-off, for a row classifier.

    Every scored row outside a window is a negative weighted by the profile's ``A_FP`` (what
    a false positive there costs); the rows of each window are positives sharing the weight
    ``A_FN`` (what missing the window costs), so every window counts the same whatever its
    width.  Probationary rows are left out.  Returns ``(X, y, weight)``.
    """
    from anomaly_gym.meta import nab

    prof = nab.get_profile(profile)
    width = len(OBSERVATION_NAMES) - 1
    xs, ys, ws = [], [], []
    for s, f in zip(series, features):
        prepared = nab.prepare_file(s.n_rows, s.windows, prof)
        f = np.asarray(f, dtype=np.float64)[:, :width]
        outside = prepared.kind == nab.OUTSIDE
        xs.append(f[outside])
        ys.append(np.zeros(int(outside.sum())))
        ws.append(np.full(int(outside.sum()), prof.a_fp))
        for k in range(prepared.n_windows):
            inside = np.flatnonzero(prepared.kind == k)
            xs.append(f[inside])
            ys.append(np.ones(len(inside)))
            ws.append(np.full(len(inside), prof.a_fn / len(inside)))
    return np.vstack(xs), np.concatenate(ys), np.concatenate(ws)


def window_bags(series: Sequence[Series], features: Sequence[np.ndarray], profile: str = "standard") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of NAB's trade-off for a multiple-instance fit: ``(X_out, cost, X_in, reward_and_bag)``.

    ``X_out`` are the scored rows outside windows, each with ``cost`` (what a false positive
    there costs: ``A_FP``, less just after a window); ``X_in`` are the rows of windows where a
    first detection still earns something, with ``reward_and_bag[:, 0]`` what it earns
    (NAB's scaled sigmoid: most at the window's start) and ``reward_and_bag[:, 1]`` the
    window's index.  Probationary rows are left out.
    """
    from anomaly_gym.meta import nab

    prof = nab.get_profile(profile)
    width = len(OBSERVATION_NAMES) - 1
    outs, costs, ins, rb = [], [], [], []
    bag = 0
    for s, f in zip(series, features):
        prepared = nab.prepare_file(s.n_rows, s.windows, prof)
        f = np.asarray(f, dtype=np.float64)[:, :width]
        outside = prepared.kind == nab.OUTSIDE
        outs.append(f[outside])
        costs.append(-prepared.weight[outside])
        for k in range(prepared.n_windows):
            inside = np.flatnonzero((prepared.kind == k) & (prepared.weight > 1e-3))
            ins.append(f[inside])
            rb.append(np.column_stack([prepared.weight[inside], np.full(len(inside), bag)]))
            bag += 1
    if not ins:
        raise ValueError("no anomaly window lies after NAB's probationary period; the window fit needs at least one")
    return np.vstack(outs), np.concatenate(costs), np.vstack(ins), np.vstack(rb)


def fit_logistic_stream_policy(
    series: Sequence[Series],
    *,
    features: Sequence[np.ndarray] | None = None,
    gate_rows: int = 100,
    l2: float = 1.0,
    profile: str = "standard",
    pool: str = "rows",
    monotone: bool = True,
) -> StreamPolicy:
    """A linear stream policy, monotone by default, fitted by weighted logistic regression on NAB's trade-off.

    The rows of all ``series`` together (:func:`window_rows`: a window's rows share the
    cost of missing it, a row outside windows weighs what a false positive costs) fit a
    logistic model whose weights on directed features are kept non-negative (L-BFGS-B with
    bounds; ``l2`` is a ridge penalty on the weights).  The loss is smooth and convex, so
    the fit is deterministic and uses every feature at once, where the direct search
    (:func:`search_stream_policy`) moves one weight at a time on a piecewise-constant
    objective.  The policy reports the rising-gated score (``gate_rows``), one high score
    per event, as NAB rewards the first detection in a window.

    Args:
        series: Labelled training series; those without windows give negatives only.
        features: Their precomputed temporal features (default: computed here).
        gate_rows: See :class:`~anomaly_gym.envs.stream_policy.StreamPolicy`.
        l2: Ridge penalty on the weights.
        profile: NAB profile whose ``A_FP`` and ``A_FN`` weigh the rows.
        pool: ``"rows"``: every row of a window is a positive (:func:`window_rows`).
            ``"window"``: multiple-instance, as NAB scores: a window is one positive whose
            logit is the soft maximum over its rows of the row's logit plus the log of what
            a first detection there earns (:func:`window_bags`), so one early, high row is
            enough and a feature need not stay high through the window; rows outside
            windows are negatives weighing what a false positive there costs.  Smooth, not
            convex; fitted from the same start.
        monotone: Keep the weights on directed features non-negative (the default).  False
            leaves every weight free, so that a feature can lower the score given the others
            (a short spike that the seasonal and likelihood features do not confirm).
    """
    from scipy.optimize import minimize

    if not any(s.windows for s in series):
        raise ValueError("no training series has an anomaly window; the stream policy needs labelled anomalies")
    if l2 < 0:
        raise ValueError(f"l2 must not be negative, got {l2}")
    if pool not in ("rows", "window"):
        raise ValueError(f"pool must be 'rows' or 'window', got {pool!r}")
    feats = list(features) if features is not None else featurize_series(series)
    if pool == "rows":
        x, y, weight = window_rows(series, feats, profile)
        loss, n_rows = _rows_loss(x, y, weight, l2), len(y)
    else:
        from anomaly_gym.meta import nab

        x, cost, x_in, reward_bag = window_bags(series, feats, profile)
        loss, n_rows = _window_loss(x, cost, x_in, reward_bag, l2, nab.get_profile(profile).a_fn), len(x) + len(x_in)
    width = x.shape[1]

    bounds = [(None, None) if n in FREE_FEATURES or not monotone else (0.0, None) for n in OBSERVATION_NAMES[:width]] + [(None, None)]
    t0 = time.perf_counter()
    fit = minimize(loss, np.append(np.full(width, 0.1), -4.0), jac=True, method="L-BFGS-B", bounds=bounds)
    elapsed = time.perf_counter() - t0
    w, b = fit.x[:-1], float(fit.x[-1])
    logger.info("stream policy: logistic fit (%s pooling) on %d rows in %.1fs (%s)", pool, n_rows, elapsed, fit.message)
    layer = (np.append(w, 0.0)[None, :], np.array([b]))  # the since_flag feature keeps weight 0: no feedback
    return StreamPolicy(
        layers=[layer],
        gate_rows=gate_rows,
        metadata={
            "train_series": [s.name for s in series],
            "trainer": "logistic",
            "pool": pool,
            "monotone": bool(monotone),
            "l2": float(l2),
            "profile": profile,
            "train_rows": int(n_rows),
            "train_seconds": round(elapsed, 1),
        },
    )


def _sigmoid(m: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * m))  # overflow-free


def _rows_loss(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float):
    """Weighted logistic loss and its gradient in ``(w, b)``."""

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        m = x @ w + b
        grad = weight * (_sigmoid(m) - y)
        value = float(weight @ (np.logaddexp(0.0, m) - y * m) + l2 * (w @ w))
        return value, np.append(x.T @ grad + 2.0 * l2 * w, grad.sum())

    return loss


def _window_loss(x_out: np.ndarray, cost: np.ndarray, x_in: np.ndarray, reward_bag: np.ndarray, l2: float, a_fn: float):
    """Multiple-instance loss: ``sum_j cost_j softplus(m_j) + a_fn sum_k softplus(-M_k)``, ``M_k = log sum_i r_i exp(m_i)`` over window ``k``."""
    log_r = np.log(reward_bag[:, 0])
    bag = reward_bag[:, 1].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, bag[1:] != bag[:-1]])
    bag_index = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(bag)]))  # each row's window, 0..k-1

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        m = x_out @ w + b
        g_out = cost * _sigmoid(m)
        a = x_in @ w + b + log_r
        top = np.maximum.reduceat(a, starts)
        e = np.exp(a - top[bag_index])
        total = np.add.reduceat(e, starts)
        big_m = top + np.log(total)
        share = e / total[bag_index]  # each row's part of its window's soft maximum
        g_bag = -a_fn * _sigmoid(-big_m)
        g_in = g_bag[bag_index] * share
        value = float(cost @ np.logaddexp(0.0, m) + a_fn * np.logaddexp(0.0, -big_m).sum() + l2 * (w @ w))
        grad_w = x_out.T @ g_out + x_in.T @ g_in + 2.0 * l2 * w
        return value, np.append(grad_w, g_out.sum() + g_in.sum())

    return loss
