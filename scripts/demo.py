"""``anomaly-gym demo``: the main job on the built-in data, end to end: meta-train -> adapt -> detect."""

from __future__ import annotations

import argparse
import logging
import warnings

import numpy as np


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="meta-train a policy on the built-in suite, adapt it to an unseen task, detect anomalies in a CSV")
    p.add_argument("--total-steps", type=int, default=100_000, help="meta-training steps (default 100k)")
    p.add_argument("--run-dir", default="runs", help="parent folder of the run folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly_gym.meta.config import TrainConfig
    from anomaly_gym.meta.evaluate import mean_metric
    from anomaly_gym.meta.training import MetaTrainer, make_run_path
    from anomaly_gym.scripts.train import print_validation_table
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cfg = TrainConfig(
        name="demo",
        sources=["builtin"],
        total_steps=args.total_steps,
        eval_every=max(args.total_steps // 4, 1),
        checkpoint_every=args.total_steps,
        device=args.device,
        seed=args.seed,
        run_dir=args.run_dir,
    )
    console.rule("1. meta-train one policy across the built-in suite")
    run_path = make_run_path(cfg)
    trainer = MetaTrainer(cfg, run_path)
    console.print(
        f"{len(trainer.sampler.train_tasks)} source tasks for training, {len(trainer.sampler.val_tasks)} held out "
        f"(never trained on); {cfg.algo.upper()} ({cfg.meta}) on {trainer.device}, {cfg.total_steps:,} steps, "
        f"{len(cfg.featurizer.detectors)} detectors in the bank. TensorBoard: tensorboard --logdir {cfg.run_dir}"
    )
    baselines = trainer.log_setup()
    bundle = trainer.train(progress=True)
    print_validation_table(bundle.metadata["val_metrics"], baselines, cfg.featurizer)
    console.print(
        f"zero-shot on {len(trainer.sampler.val_tasks)} unseen tasks: policy mean AUROC "
        f"[bold]{bundle.metadata['val_auroc']:.3f}[/bold] vs IForest {mean_metric(baselines['iforest']):.3f}"
    )

    console.rule("2. adapt it, with 10 labelled anomalies, to each unseen task")
    # every held-out task with enough anomalies to label 10 (no choice among them by results)
    roomy = [t for t in trainer.sampler.val_tasks if t.n_anomalies >= 20] or trainer.sampler.val_tasks
    rows = [_adapt_one(bundle, task, args.seed) for task in roomy]
    table = Table(title="test AUROC on rows that neither the policy nor IForest saw")
    for col in ("task", "zero-shot", "few-shot (10 labels)", "IForest", "kept"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for r in rows:
        table.add_row(r["task"], f"{r['zero']:.3f}", f"{r['few']:.3f}", f"{r['iforest']:.3f}", r["kept"])
    console.print(table)
    few_mean = float(np.mean([r["few"] for r in rows]))
    iforest_mean = float(np.mean([r["iforest"] for r in rows]))
    wins = sum(r["few"] > r["iforest"] for r in rows)
    losses = sum(r["few"] < r["iforest"] for r in rows)
    verdict = "beats" if few_mean > iforest_mean else ("ties" if few_mean == iforest_mean else "does not beat")
    console.print(
        f"on {len(rows)} unseen task(s) the adapted policy {verdict} IForest: mean test AUROC {few_mean:.3f} vs "
        f"{iforest_mean:.3f} (wins {wins}, ties {len(rows) - wins - losses}, losses {losses})"
    )
    # the file scored in step 3: the unseen task the zero-shot policy found hardest
    hardest = min(rows, key=lambda r: (r["zero"], r["task"]))
    return _detect_step(console, run_path, hardest)


def _detect_step(console, run_path, hardest: dict) -> int:
    """Step 3: score a CSV made of ``hardest``'s test rows with the policy adapted to it, and show the flagged rows."""
    import pandas as pd
    from anomaly_gym.scripts.cli import main as cli
    from rich.table import Table

    target, split, few = hardest["target"], hardest["split"], hardest["bundle"]
    adapted_path = few.save(run_path / "adapted.bundle.zip")

    console.rule(f"3. detect anomalies in a CSV file with the policy adapted to {target.name}")
    sample = run_path / "sample.csv"
    frame = pd.DataFrame(split.test.X, columns=[f"x{j}" for j in range(split.test.n_features)])
    frame.insert(0, "timestamp", pd.date_range("2026-01-01", periods=len(frame), freq="min").strftime("%Y-%m-%dT%H:%M"))
    frame.to_csv(sample, index=False)
    scored = run_path / "sample.scored.csv"
    code = cli(["detect", str(sample), "--model", str(adapted_path), "--output", str(scored), "--no-progress"])
    if code != 0:
        return code
    out = pd.read_csv(scored)
    out["true_label"] = split.test.y
    flagged = out[out["is_anomaly"] == 1].sort_values("anomaly_score", ascending=False)
    table = Table(title=f"flagged rows of {sample.name} ({len(flagged)} of {len(out)}; the true labels are shown for the demo only)")
    for col in ("timestamp", "anomaly_score", "true_label"):
        table.add_column(col, justify="right")
    for _, row in flagged.head(12).iterrows():
        table.add_row(str(row["timestamp"]), f"{row['anomaly_score']:.3f}", "anomaly" if row["true_label"] else "normal")
    console.print(table)
    hits = int(flagged["true_label"].sum())
    console.print(f"{hits} of the {len(flagged)} flagged rows are true anomalies (of {int(np.sum(split.test.y))} in the file). Scored file: {scored}")
    return 0


def _adapt_one(bundle, target, seed: int) -> dict:
    """Zero-shot, few-shot (10 anomalies + 50 normal rows labelled) and IForest test AUROC on one held-out task."""
    from anomaly_gym.detectors import make_detector
    from anomaly_gym.envs import benchmark_split
    from anomaly_gym.meta.adapt import adapt, few_shot_labels
    from sklearn.metrics import roc_auc_score

    split = benchmark_split(target, seed)
    X, y = split.train.X, split.train.y
    labels = few_shot_labels(y, min(10, int(y.sum()) - 1), min(50, int((y == 0).sum()) - 1), seed=seed)
    quiet = logging.getLogger("anomaly_gym")  # the table's "kept" column says what the guard chose
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zero = adapt(bundle, X, seed=seed)
            few = adapt(bundle, X, labels, seed=seed)
            iforest = make_detector("iforest", random_state=seed).fit(X)
    finally:
        quiet.setLevel(level)
    test_auc = lambda b: roc_auc_score(split.test.y, b.score(split.test.X, refit=False))  # noqa: E731
    return {
        "task": target.name,
        "target": target,
        "split": split,
        "bundle": few,
        "zero": test_auc(zero),
        "few": test_auc(few),
        "iforest": roc_auc_score(split.test.y, iforest.decision_function(split.test.X)),
        "kept": few.metadata["adaptation"]["kept"],
    }
