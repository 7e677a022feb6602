"""``anomaly-gym bench env``: env-steps/s of a per-object loop vs :class:`BatchedDetectEnv`, and SB3 PPO on the batched env."""

from __future__ import annotations

import argparse
import os
import time


def add_parser(sub) -> None:
    e = sub.add_parser(
        "env",
        help="env-steps/s of N sub-environments: a DummyVecEnv loop of Detect-v0 vs BatchedDetectEnv, and SB3 PPO on the batched env",
    )
    e.add_argument("--n-envs", type=int, default=256, help="sub-environments stepped together (default 256)")
    e.add_argument("--seconds", type=float, default=1.5, help="time of one run of one environment variant (default 1.5)")
    e.add_argument("--repeats", type=int, default=3, help="interleaved runs of every variant; the best is reported (default 3)")
    e.add_argument("--episode-length", type=int, default=256, help="steps per episode (default 256, as Detect-v0)")
    e.add_argument("--ppo-steps", type=int, default=50_000, help="PPO learn() budget on the batched env; 0 skips PPO (default 50000)")
    e.add_argument("--ppo-n-steps", type=int, default=32, help="PPO rollout steps per sub-environment (default 32)")
    e.add_argument("--ppo-batch-size", type=int, default=2048, help="PPO minibatch size (default 2048)")
    e.add_argument("--ppo-epochs", type=int, default=4, help="PPO epochs per rollout (default 4)")
    e.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="device of the batched env and of PPO (default cpu)")
    e.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads (default 1: small MLPs gain nothing from more, and shared cores lose a lot)")
    e.add_argument("--seed", type=int, default=0, help="seed of the environments, actions and PPO")
    e.set_defaults(func=run)


def _env_rate(venv, n_envs: int, seconds: float, seed: int) -> float:
    """Env-steps/s of a VecEnv stepped with pre-drawn random actions for at least ``seconds``."""
    import numpy as np

    actions = np.random.default_rng(seed).integers(0, 2, size=(64, n_envs))
    venv.seed(seed)
    venv.reset()
    for a in actions[:4]:  # warm-up
        venv.step(a)
    steps, t0 = 0, time.perf_counter()
    while True:
        for a in actions[steps % 64 : steps % 64 + 16]:
            venv.step(a)
        steps += 16
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return steps * n_envs / elapsed


def run(args: argparse.Namespace) -> int:
    """Env-steps/s of a per-object loop vs :class:`BatchedDetectEnv`, then SB3 PPO steps/s on the batched env."""
    import torch
    from anomaly_gym.envs import FeaturizerConfig, builtin_suite, featurize_task
    from anomaly_gym.envs.vector import resolve_backend
    from rich.progress import track

    n = args.n_envs
    for name in ("n_envs", "episode_length", "repeats", "ppo_n_steps", "ppo_batch_size", "ppo_epochs", "torch_threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.seconds <= 0 or args.ppo_steps < 0:
        raise ValueError("--seconds must be positive and --ppo-steps non-negative")
    _, device = resolve_backend(None, args.device)
    torch.set_num_threads(args.torch_threads)

    tasks = builtin_suite()
    config = FeaturizerConfig()
    for task in track(tasks, description="features of the built-in suite (cached on disk)", transient=True):
        featurize_task(task, config)
    print(
        f"built-in suite: {len(tasks)} tasks, {sum(t.n_rows for t in tasks):,} rows, {len(config.feature_names())} features; "
        f"{n} sub-environments, episode_length {args.episode_length}, random actions; cores: {os.cpu_count()}, "
        f"torch threads: {args.torch_threads}"
    )
    figures = _bare_rates(args, tasks, device)
    if args.ppo_steps == 0:
        return figures
    return figures | {"PPO steps/s": _ppo_rate(args, tasks, device)}


def _bare_rates(args, tasks, device: str) -> dict[str, float]:
    """Env-steps/s of every environment variant, printed; the headline figures."""
    from anomaly_gym.envs import AnomalyDetectionEnv
    from anomaly_gym.envs.vector import BatchedDetectEnv
    from rich.progress import track
    from stable_baselines3.common.vec_env import DummyVecEnv

    n = args.n_envs
    loop = DummyVecEnv([lambda t=tasks[i % len(tasks)]: AnomalyDetectionEnv([t], episode_length=args.episode_length) for i in range(n)])
    variants = [
        ("per-object loop: DummyVecEnv of Detect-v0", loop),
        ("BatchedDetectEnv numpy, rng_mode='batched'", dict()),
        ("BatchedDetectEnv numpy, rng_mode='per_env' (exact)", dict(rng_mode="per_env")),
        ("BatchedDetectEnv torch on cpu, rng_mode='batched'", dict(backend="torch", device="cpu")),
    ]
    if device != "cpu":
        variants.append((f"BatchedDetectEnv torch on {device}, rng_mode='batched'", dict(backend="torch", device=device)))
    variants = [(label, v if not isinstance(v, dict) else BatchedDetectEnv(tasks, n_envs=n, episode_length=args.episode_length, **v)) for label, v in variants]
    # Interleaved repeats, best of each: other load on shared cores then hits every variant alike.
    best = {label: 0.0 for label, _ in variants}
    for r in track(range(args.repeats), description="stepping the environments", transient=True):
        for label, venv in variants:
            best[label] = max(best[label], _env_rate(venv, n, args.seconds, args.seed + r))
    print(f"bare environment, env-steps/s (best of {args.repeats} interleaved runs of {args.seconds:g}s each):")
    base = best[variants[0][0]]
    for label, rate in best.items():
        print(f"  {label:<52} {rate:>12,.0f}  {rate / base:6.1f}x the loop")
    ratio = best[variants[1][0]] / base
    print(f"batched (numpy, rng_mode='batched') / loop: {ratio:.1f}x (target >= 20x: {'met' if ratio >= 20 else 'NOT met'})")
    for _, venv in variants:
        venv.close()
    return {"loop env-steps/s": base, "batched env-steps/s": best[variants[1][0]], "batched / loop (x)": ratio}


def _ppo_rate(args, tasks, device: str) -> float:
    """SB3 PPO steps/s on the batched env, printed with the rollout/update split."""
    import numpy as np
    from anomaly_gym.envs.vector import BatchedDetectEnv
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecMonitor

    n = args.n_envs

    class RolloutTimer(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rollout_s = 0.0

        def _on_rollout_start(self) -> None:
            self._t0 = time.perf_counter()

        def _on_rollout_end(self) -> None:
            self.rollout_s += time.perf_counter() - self._t0

        def _on_step(self) -> bool:
            return True

    venv = VecMonitor(BatchedDetectEnv(tasks, n_envs=n, episode_length=args.episode_length, device=device))
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=args.ppo_n_steps,
        batch_size=args.ppo_batch_size,
        n_epochs=args.ppo_epochs,
        seed=args.seed,
        device=device,
        verbose=0,
    )
    timer = RolloutTimer()
    t0 = time.perf_counter()
    model.learn(args.ppo_steps, callback=timer)
    wall = time.perf_counter() - t0
    steps = model.num_timesteps
    returns = [e["r"] for e in model.ep_info_buffer]
    finished = (
        f"mean return of the last {len(returns)} episodes {np.mean(returns):.1f} (of -{args.episode_length}..+{args.episode_length})"
        if returns
        else f"no episode of {args.episode_length} steps finished"
    )
    print(
        f"SB3 PPO on BatchedDetectEnv (MlpPolicy, device {device}, n_steps {args.ppo_n_steps} x {n} envs, "
        f"batch {args.ppo_batch_size}, {args.ppo_epochs} epochs): {steps:,} steps in {wall:.2f}s = {steps / wall:,.0f} steps/s"
    )
    print(f"  rollout collection {timer.rollout_s:.2f}s ({steps / timer.rollout_s:,.0f} steps/s), gradient updates {wall - timer.rollout_s:.2f}s; {finished}")
    return steps / wall
