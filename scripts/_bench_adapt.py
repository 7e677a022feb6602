"""``anomaly-gym bench adapt``: few-shot vs zero-shot adaptation on datasets a bundle never trained on."""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from anomaly_gym.scripts._args import add_list_argument


def add_parser(bsub) -> None:
    a = bsub.add_parser(
        "adapt",
        help="AUROC of few-shot adaptation vs zero-shot on the bundle's validation datasets (unlabelled rest of the training part, and the guard's choice judged on the unseen test part)",
    )
    a.add_argument("--model", type=Path, required=True, help="policy bundle from `anomaly-gym train` (its val_tasks are the targets)")
    a.add_argument("--data", "--data-dir", dest="data_dir", type=Path, default=Path("../shared/data/adbench"), help="folder of NAME.npz files")
    add_list_argument(a, "--datasets", default=None, help="targets (default: the bundle's validation tasks)")
    a.add_argument("--shots", type=int, default=10, help="labelled anomalies (default 10)")
    a.add_argument("--normals", type=int, default=50, help="labelled normal rows (default 50)")
    a.add_argument("--seeds", type=int, default=3, help="seeds of the split and of the labels (default 3)")
    a.add_argument(
        "--few-shot", dest="few_shot", choices=("head", "fine-tune"), default="head", help="few-shot method (default head; see `anomaly-gym adapt --help`)"
    )
    a.add_argument(
        "--ablate-prior", action="store_true", help="also fit the head without the policy (boosted from the base rate) to show what the meta-learned prior adds"
    )
    a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly_gym.agents import load_bundle
    from anomaly_gym.agents.head import HeadSettings
    from anomaly_gym.envs import load_adbench_dir
    from anomaly_gym.meta.adapt import AdaptSettings
    from rich.console import Console
    from rich.table import Table

    bundle = load_bundle(args.model, device="cpu")
    names = args.datasets or bundle.metadata.get("val_tasks")
    if not names:
        raise ValueError("the bundle records no validation tasks; pass --datasets")
    trained_on = set(bundle.metadata.get("train_tasks", []))
    leaked = sorted(set(names) & trained_on)
    if leaked:
        raise ValueError(f"{leaked} are among the bundle's training tasks; adaptation must be measured on unseen datasets")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tasks = load_adbench_dir(args.data_dir, names=names)
    settings = AdaptSettings(few_shot=args.few_shot)
    ablate = args.ablate_prior
    if ablate and args.few_shot != "head":
        raise ValueError("--ablate-prior compares target heads; use it with --few-shot head")
    no_prior = AdaptSettings(head=HeadSettings(policy_prior=False))
    table = Table(
        title=f"few-shot {args.few_shot} ({args.shots} anomalies + {args.normals} normal rows labelled) vs zero-shot: "
        f"AUROC on the unlabelled rest of the training part, mean of {args.seeds} seeds"
    )
    columns = ["dataset", "zero-shot", "few-shot", "kept adapted", "held-out AUROC before -> after", "unseen test part: zero -> few", "seconds"]
    if ablate:
        columns[3:3] = ["head, no guard", "head without the policy, no guard"]
    for col in columns:
        table.add_column(col, justify="left" if col == "dataset" else "right")
    zs_all, fs_all, np_all, p_all, gaps = [], [], [], [], []
    for task in tasks:
        t0 = time.perf_counter()
        runs = [_one_seed(bundle, task, seed, args, settings, no_prior if ablate else None) for seed in range(args.seeds)]
        zs, fs = [r["zero"] for r in runs], [r["few"] for r in runs]
        kept = sum(r["kept"] for r in runs)
        held = [r["held"] for r in runs]
        unseen = [r["unseen"] for r in runs]
        bare, prior = [r["bare"] for r in runs if ablate], [r["prior"] for r in runs if ablate]
        gaps.extend(u[1] - u[0] for u in unseen)
        zs_all.append(np.mean(zs))
        fs_all.append(np.mean(fs))
        before, after = np.mean(held, axis=0)
        cells = [
            task.name,
            f"{np.mean(zs):.3f}",
            f"{np.mean(fs):.3f}",
            f"{kept}/{args.seeds}",
            f"{before:.3f} -> {after:.3f}",
            "{:.3f} -> {:.3f}".format(*np.mean(unseen, axis=0)),
            f"{time.perf_counter() - t0:.0f}",
        ]
        if ablate:
            p_all.append(np.mean(prior))
            np_all.append(np.mean(bare))
            cells[3:3] = [f"{np.mean(prior):.3f}", f"{np.mean(bare):.3f}"]
        table.add_row(*cells)
    cells = ["[bold]mean[/bold]", f"{np.mean(zs_all):.3f}", f"[bold]{np.mean(fs_all):.3f}[/bold]", "", "", "", ""]
    if ablate:
        cells[3:3] = [f"{np.mean(p_all):.3f}", f"{np.mean(np_all):.3f}"]
    table.add_row(*cells)
    Console().print(table)
    gaps = np.asarray(gaps)
    print(f"few-shot - zero-shot: {np.mean(fs_all) - np.mean(zs_all):+.4f} mean AUROC over {len(tasks)} unseen datasets")
    print(
        f"guarded few-shot vs zero-shot on the unseen test part: mean {gaps.mean():+.4f}, worse by more than 0.01 "
        f"in {int((gaps < -0.01).sum())} of {len(gaps)} runs (worst {gaps.min():+.4f})"
    )
    if ablate:
        print(f"unguarded head with the policy as prior - without it: {np.mean(p_all) - np.mean(np_all):+.4f} mean AUROC")
    return 0


def _one_seed(bundle, task, seed: int, args: argparse.Namespace, settings, no_prior) -> dict:
    """Zero- and few-shot AUROC of ``bundle`` on one seed's split of ``task``; with ``no_prior``
    settings, also the unguarded heads with and without the policy as prior."""
    from anomaly_gym.agents.factory import policy_margin
    from anomaly_gym.agents.head import fit_head
    from anomaly_gym.envs import benchmark_split
    from anomaly_gym.meta.adapt import adapt, few_shot_labels
    from sklearn.metrics import roc_auc_score

    split = benchmark_split(task, seed)
    X, y = split.train.X, split.train.y
    n_anom = min(args.shots, int(y.sum()) - 1)
    labels = few_shot_labels(y, n_anom, min(args.normals, int((y == 0).sum()) - 1), seed=seed)
    rest = labels == -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zero = adapt(bundle, X, seed=seed)
        few = adapt(bundle, X, labels, seed=seed, settings=settings)
    rec = few.metadata["adaptation"]
    out = {
        "zero": roc_auc_score(y[rest], zero.score(X[rest], refit=False)),
        "few": roc_auc_score(y[rest], few.score(X[rest], refit=False)),
        "kept": rec["kept"] == "adapted",
        "held": (rec.get("held_out_auroc_before", np.nan), rec.get("held_out_auroc_after", np.nan)),  # none with one labelled anomaly
        # the guard's decision judged on rows neither it nor the head ever saw
        "unseen": (roc_auc_score(split.test.y, zero.score(split.test.X, refit=False)), roc_auc_score(split.test.y, few.score(split.test.X, refit=False))),
    }
    if no_prior is not None:  # heads fitted directly, without the guard: with the policy as prior and without it
        features = few.featurizer.transform(X)
        margin = policy_margin(few.model, features)
        target = (labels == 1).astype(np.int8)
        for key, head_settings in (("bare", no_prior.head), ("prior", settings.head)):
            head = fit_head(X, features, margin, target, head_settings, seed)
            out[key] = roc_auc_score(y[rest], head.proba(X[rest], features[rest], margin[rest]))
    return out
