"""The benchmark's report: per-setting tables, average ranks, paired Wilcoxon tests, ``summary.md`` and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from anomaly_gym.meta.benchmark.protocol import POLICY, TIE
from anomaly_gym.meta.benchmark.results import load_results


def _group_slug(protocol: str, labels: str) -> str:
    return protocol if protocol == "zero-shot" else f"{protocol}-{labels.replace('%', 'pct')}"


def _wilcoxon(diff: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    diff = np.asarray(diff, dtype=float)
    if len(diff) == 0:
        return float("nan")
    if np.all(np.abs(diff) < 1e-12):
        return 1.0
    try:
        return float(wilcoxon(diff).pvalue)
    except ValueError:
        return 1.0


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def group_tables(frame) -> dict:
    """Per (protocol, labels): per-dataset mean over seeds of AUROC and AUPRC, one column per method.

    A method counts on a dataset only when it succeeded on every seed run there (by any
    method), so that every cell is a mean over the same seeds.
    """
    tables = {}
    for (protocol, labels), part in frame.groupby(["protocol", "labels"], sort=False):
        seeds = part.groupby("dataset")["seed"].nunique()
        ok = part[part["status"] == "ok"]
        if ok.empty:
            continue
        grouped = ok.groupby(["dataset", "method"])
        means = grouped[["auroc", "auprc"]].mean()
        complete = grouped["seed"].nunique() == seeds.reindex(means.index.get_level_values("dataset")).to_numpy()
        means = means[complete.to_numpy()]
        if means.empty:
            continue
        tables[(protocol, labels)] = {
            "auroc": means["auroc"].unstack("method"),
            "auprc": means["auprc"].unstack("method"),
        }
    return tables


def average_ranks(auroc) -> tuple[Any, list[str]]:
    """Average rank (1 = best) of each method over the datasets where every method has a result."""
    from scipy.stats import rankdata

    complete = auroc.dropna(axis=0, how="any")
    if complete.empty:
        return None, []
    ranks = np.vstack([rankdata(-row.to_numpy()) for _, row in complete.iterrows()])
    import pandas as pd

    return pd.Series(ranks.mean(axis=0), index=complete.columns), list(complete.index)


def compare(a, b) -> dict:
    """Paired comparison of two per-dataset columns: wins/ties/losses of ``a``, mean difference, Wilcoxon p."""
    pair = np.column_stack([a.to_numpy(), b.to_numpy()])
    pair = pair[~np.isnan(pair).any(axis=1)]
    diff = pair[:, 0] - pair[:, 1] if len(pair) else np.array([])
    return {
        "n": len(diff),
        "wins": int((diff >= TIE).sum()),
        "ties": int((np.abs(diff) < TIE).sum()),
        "losses": int((diff <= -TIE).sum()),
        "mean_diff": float(diff.mean()) if len(diff) else float("nan"),
        "p": _wilcoxon(diff),
    }


def write_summary(out: Path) -> Path:
    """Write ``summary.md`` and the PNG plots from ``out/results.csv``."""
    out = Path(out)
    frame = load_results(out / "results.csv")
    setup = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    lines = ["# Benchmark summary", ""]
    commands = setup.get("commands", [])
    if commands:
        lines += ["Command" + ("s (the rows of each were added to the same results):" if len(commands) > 1 else ":"), ""]
        lines += [f"    {c}" for c in commands] + [""]
    lines += [
        "Protocol (ADBench): per target and seed, targets above 10,000 rows are subsampled to 10,000, split 70/30 "
        "(stratified), min-max scaled with the training part's statistics; every method is fitted on the training "
        "part and scored on the test part. Figures are per-dataset means over seeds, then summarised across datasets. "
        f"Ties: per-dataset differences below {TIE}. The policy never trains on its target "
        f"({_policy_line(setup)}).",
        "",
    ]
    if frame.empty:
        lines.append("No results yet.")
    tables = group_tables(frame)
    for (protocol, labels), tab in sorted(tables.items(), key=lambda kv: _setting_order(*kv[0])):
        lines += _group_section(out, frame, protocol, labels, tab)
    errors = frame[frame["status"] != "ok"]
    if len(errors):
        lines += ["## Errors", "", f"{len(errors)} row(s) failed and are left out of the tables above:", ""]
        for (method, message), part in errors.groupby(["method", "error"], sort=True):
            where = ", ".join(sorted({f"{d}" for d in part["dataset"]}, key=str.lower))
            lines.append(f"- `{method}` on {where} ({len(part)} row(s)): {message}")
        lines.append("")
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _setting_order(protocol: str, labels: str) -> tuple:
    if protocol == "zero-shot":
        return (0, 0.0)
    if labels.endswith("%"):
        return (2, float(labels[:-1]))
    return (1, float(labels)) if labels.isdigit() else (3, 0.0)


def _policy_line(setup: dict) -> str:
    policy = setup.get("policy", {})
    mode = policy.get("mode")
    if mode == "train":
        folds = setup.get("holdout", {}).get("folds") if isinstance(setup.get("holdout"), dict) else None
        return (
            f"trained from a config per fold of a dataset-level {folds}-fold split of the targets that are also "
            "sources, on the sources minus the fold; see folds.json"
        )
    if mode == "model":
        return "one given bundle; targets among its training tasks are error rows"
    if mode == "default":
        return "the shipped bundle; targets among its training tasks are error rows"
    return "see run.json"


def _group_section(out: Path, frame, protocol: str, labels: str, tab: dict) -> list[str]:
    from anomaly_gym.detectors import DETECTORS

    auroc, auprc = tab["auroc"], tab["auprc"]
    part = frame[(frame["protocol"] == protocol) & (frame["labels"] == labels)]
    title = "zero-shot" if protocol == "zero-shot" else f"few-shot, {labels} labelled anomalies"
    seeds = sorted(part["seed"].unique())
    lines = [f"## {title}", "", f"{auroc.shape[0]} datasets, seeds {', '.join(map(str, seeds))}.", ""]
    ranks, complete = average_ranks(auroc)
    errors = part[part["status"] != "ok"].groupby("method").size()
    order = auroc.mean().sort_values(ascending=False).index
    lines += [
        "### Mean and median over datasets",
        "",
        f"A method counts on a dataset when it succeeded on every seed there. Average rank by AUROC (1 = best) over the "
        f"{len(complete)} datasets where every method has a result.",
        "",
        "| method | datasets | mean AUROC | median AUROC | mean AUPRC | median AUPRC | avg rank | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in order:
        name = f"**{m}**" if m == POLICY else m
        rank = _fmt(float(ranks[m]), 2) if ranks is not None else "–"
        lines.append(
            f"| {name} | {int(auroc[m].notna().sum())} | {_fmt(auroc[m].mean())} | {_fmt(auroc[m].median())} | "
            f"{_fmt(auprc[m].mean())} | {_fmt(auprc[m].median())} | {rank} | {int(errors.get(m, 0))} |"
        )
    lines.append("")
    if POLICY in auroc.columns:
        lines += [
            "### The policy against each baseline",
            "",
            "Wins / ties / losses of the policy on per-dataset means; mean difference (policy minus baseline); "
            "two-sided Wilcoxon signed-rank p-value over the paired datasets.",
            "",
            "| baseline | datasets | W / T / L AUROC | mean Δ AUROC | p (AUROC) | W / T / L AUPRC | mean Δ AUPRC | p (AUPRC) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in order:
            if m == POLICY:
                continue
            a, b = compare(auroc[POLICY], auroc[m]), compare(auprc[POLICY], auprc[m])
            lines.append(
                f"| {m} | {a['n']} | {a['wins']} / {a['ties']} / {a['losses']} | {a['mean_diff']:+.3f} | {_fmt_p(a['p'])} | "
                f"{b['wins']} / {b['ties']} / {b['losses']} | {b['mean_diff']:+.3f} | {_fmt_p(b['p'])} |"
                if a["n"]
                else f"| {m} | 0 | – | – | – | – | – | – |"
            )
        lines.append("")
    transfer = [m for m in order if m in DETECTORS and DETECTORS[m].uses_source]
    if transfer:
        reference = POLICY if POLICY in auroc.columns else None
        lines += ["### Where the transfer baselines win", ""]
        others = [m for m in auroc.columns if m not in transfer]
        for m in transfer:
            lines.append("- " + _transfer_note(auroc, m, reference, others))
        lines.append("")
    slug = _group_slug(protocol, labels)
    try:
        plot_by_dataset(auroc, out / f"auroc_by_dataset_{slug}.png", title=f"AUROC by dataset ({title})")
        if ranks is not None:
            plot_ranks(ranks, out / f"average_rank_{slug}.png", title=f"average AUROC rank over {len(complete)} datasets ({title})")
        lines += [f"![AUROC by dataset](auroc_by_dataset_{slug}.png)", ""]
        if ranks is not None:
            lines += [f"![average rank](average_rank_{slug}.png)", ""]
    except Exception as exc:  # a plotting failure must not lose the summary
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        lines += [f"(plots failed: {reason})", ""]
    return lines


def _transfer_note(auroc, method: str, reference: str | None, others: list[str]) -> str:
    col = auroc[method]
    parts = []
    if reference is not None:
        pair = auroc[[method, reference]].dropna()
        diff = (pair[method] - pair[reference]).sort_values(ascending=False)
        wins = diff[diff >= TIE]
        listed = ", ".join(f"{d} {v:+.3f}" for d, v in wins.head(5).items())
        more = f", and {len(wins) - 5} more" if len(wins) > 5 else ""
        parts.append(f"beats the policy on {len(wins)} of {len(pair)} datasets" + (f" ({listed}{more})" if len(wins) else ""))
    if others:
        rest = auroc[others].max(axis=1)
        mask = col.notna() & rest.notna()
        best = [d for d in auroc.index[mask] if col[d] - rest[d] >= TIE]
        parts.append(
            f"beats every non-transfer method on {len(best)} of {int(mask.sum())}"
            + (f" ({', '.join(best[:5])}{', ...' if len(best) > 5 else ''})" if best else "")
        )
    return f"`{method}` (mean AUROC {_fmt(col.mean())}): " + "; ".join(parts) + "."


def plot_by_dataset(auroc, path: Path, title: str) -> Path:
    """Dot plot: one row per dataset, one marker per method (the policy drawn large)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = auroc[POLICY] if POLICY in auroc.columns else auroc.mean(axis=1)
    data = auroc.loc[key.sort_values(na_position="first").index]
    methods = list(data.columns)
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.32 * len(data)))
    cmap = plt.get_cmap("tab10")
    markers = "osv^<>PXdh"
    y = np.arange(len(data))
    for i, m in enumerate(m for m in methods if m != POLICY):
        ax.scatter(data[m], y, s=20, color=cmap(i % 10), marker=markers[(i // 10 + i) % len(markers)], label=m, alpha=0.8, zorder=2)
    if POLICY in methods:
        ax.scatter(data[POLICY], y, s=90, marker="D", color="black", label=POLICY, zorder=3)
    ax.set_yticks(y, [str(d) for d in data.index], fontsize=8)
    ax.set_xlabel("AUROC (test part, mean over seeds)")
    ax.set_xlim(0, 1.01)
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ranks(ranks, path: Path, title: str) -> Path:
    """Horizontal bars of the average rank (shorter is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = ranks.sort_values(ascending=False)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(ranks)))
    colors = ["black" if m == POLICY else "tab:blue" for m in ranks.index]
    ax.barh(np.arange(len(ranks)), ranks.to_numpy(), color=colors)
    ax.set_yticks(np.arange(len(ranks)), list(ranks.index), fontsize=8)
    ax.set_xlabel("average rank (1 = best)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
