"""The NAB benchmark: the stream policy and online baselines, leave-one-category-out, scored the NAB way.

For every category of the NAB folder, a stream policy is fitted on the *other*
categories' files plus seeded synthetic series (by default a monotone logistic fit on NAB's
trade-off of windows against false-positive rows, each window one positive as NAB counts
it; every window row a positive with ``trainer="logistic"``; direct search on their NAB
score with ``trainer="search"``; PPO on ``Stream-v0`` with ``trainer="ppo"``), and scores the held-out category's files
through the streaming path (:class:`~anomaly_gym.envs.stream_policy.TemporalScorer`, row
by row).  So no file is ever scored by a policy that trained on its category.  Baselines
(rolling z-score, windowed Gaussian, River's Half-Space Trees) need no training and score
every file.

Three thresholds are reported for each method:

- **corpus** (NAB's protocol): one threshold for the whole corpus, the best of NAB's sweep
  over all files' scores.  This is how NAB's scoreboard ranks detectors; it chooses the
  threshold with the labels of every file, the held-out ones included.
- **held-out**: for each category, the best threshold on the *other* categories' files
  (for the policy, scored by that fold's policy), applied to the category.  No label of a
  scored file is used at all.
- **per-file**: every file at its own best threshold, chosen with its own labels.  No
  detector's score: an upper bound on what one threshold can reach with the same scores, so
  its gap to the corpus threshold is what the scores lose by not being comparable across
  streams.

Outputs in ``out_dir``: NAB-layout results files (``results/<method>/<category>/<method>_<file>.csv``),
each fold's policy (``policies/<category>.policy.json``), ``summary.csv`` and ``summary.md``
(per category and overall, the three thresholds), and ``plots/<category>/<file>.png`` (the
series, its windows, each method's flags at its corpus threshold).
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from anomaly_gym.envs.series import Series, load_nab_dir, synthetic_suite
from anomaly_gym.envs.stream_policy import StreamPolicy, TemporalScorer
from anomaly_gym.meta import nab
from anomaly_gym.meta.stream_training import (
    calibrate_threshold,
    featurize_series,
    fit_logistic_stream_policy,
    score_series_with_policy,
    search_stream_policy,
    train_stream_policy,
)

logger = logging.getLogger(__name__)

POLICY = "policy"
METHODS = (POLICY, "rolling_zscore", "windowed_gaussian", "half_space_trees")


@dataclass
class NabBenchmarkConfig:
    """Settings of :func:`run_nab_benchmark`."""

    methods: tuple[str, ...] = METHODS
    """Methods to score: ``policy`` and any of :data:`anomaly_gym.detectors.online.BASELINES`."""
    profile: str = "standard"
    """NAB profile for scoring and for the policy's reward."""
    synthetic_series: int = 60
    """Synthetic training series added to every fold."""
    synthetic_seed: int = 1000
    """Seed of the first synthetic series."""
    trainer: str = "window"
    """How the policy is fitted: ``window`` (a monotone logistic fit on NAB's trade-off of windows and
    false-positive rows, each window one positive: the soft maximum of its rows, weighted by what a first
    detection there earns; gated scores; see :func:`~anomaly_gym.meta.stream_training.fit_logistic_stream_policy`
    with ``pool="window"``), ``logistic`` (the same fit with every window row a positive, ``pool="rows"``),
    ``search`` (direct search on the NAB score of the training series, gated scores; see
    :func:`~anomaly_gym.meta.stream_training.search_stream_policy`) or ``ppo`` (PPO on ``Stream-v0``)."""
    search_iterations: int = 40
    """Search steps per fold (``trainer="search"``)."""
    gate_rows: int = 100
    """The policy's rising gate (``trainer="window"``, ``"logistic"`` or ``"search"``): see :class:`~anomaly_gym.envs.stream_policy.StreamPolicy`."""
    l2: float = 1.0
    """Ridge penalty of the logistic fit (``trainer="logistic"`` or ``"window"``)."""
    monotone: bool = True
    """Keep the policy's weights on directed features non-negative; False frees their signs
    (``trainer="window"``, ``"logistic"`` or ``"ppo"``; the search is always monotone)."""
    total_steps: int = 150_000
    """PPO steps per fold (``trainer="ppo"``)."""
    seed: int = 0
    """Seed of PPO and its environments."""
    plots: bool = True
    """Write a plot per file."""


def _score_baseline(name: str, series: Series) -> np.ndarray:
    from anomaly_gym.detectors.online import BASELINES

    det = BASELINES[name](series.n_rows)
    values = series.values.reshape(series.n_rows, -1)[:, 0].tolist()
    return np.array([det.process_one(v) for v in values], dtype=np.float64)


def _policy_folds(corpus: list[Series], cfg: NabBenchmarkConfig, out_dir: Path) -> tuple[dict, dict]:
    """Scores of every file by the policy that never trained on its category, and each fold's scores on its training files."""
    synthetic = synthetic_suite(cfg.synthetic_series, seed=cfg.synthetic_seed)
    feats = dict(zip([s.name for s in corpus], featurize_series(corpus)))
    syn_feats = featurize_series(synthetic)
    held_scores, train_scores = {}, {}
    for cat in sorted({s.category for s in corpus}):
        train = [s for s in corpus if s.category != cat]
        t0 = time.perf_counter()
        policy = fit_policy(train + synthetic, [feats[s.name] for s in train] + syn_feats, cfg)
        policy.metadata["held_out_category"] = cat
        calibrate_threshold(policy, train + synthetic, [feats[s.name] for s in train] + syn_feats, cfg.profile)
        policy.save(out_dir / "policies" / f"{cat}.policy.json")
        for s in corpus:
            if s.category == cat:  # the streaming path, row by row
                held_scores[s.name] = TemporalScorer(policy, s.values.reshape(s.n_rows, -1).shape[1]).score_series(s.values, s.timestamps)
        train_scores[cat] = dict(zip([s.name for s in train], score_series_with_policy(policy, [feats[s.name] for s in train])))
        logger.info("fold %s: trained and scored in %.0fs", cat, time.perf_counter() - t0)
    return held_scores, train_scores


def fit_policy(series: Sequence[Series], features: Sequence[np.ndarray], cfg: NabBenchmarkConfig) -> StreamPolicy:
    """A stream policy fitted on ``series`` by ``cfg.trainer``."""
    if cfg.trainer in ("logistic", "window"):
        pool = "rows" if cfg.trainer == "logistic" else "window"
        return fit_logistic_stream_policy(series, features=features, gate_rows=cfg.gate_rows, l2=cfg.l2, profile=cfg.profile, pool=pool, monotone=cfg.monotone)
    if cfg.trainer == "search":
        if not cfg.monotone:
            raise ValueError("the search trainer fits monotone policies only; free signs need trainer 'window', 'logistic' or 'ppo'")
        return search_stream_policy(series, features=features, iterations=cfg.search_iterations, gate_rows=cfg.gate_rows, seed=cfg.seed, profile=cfg.profile)
    if cfg.trainer == "ppo":
        return train_stream_policy(series, features=features, total_steps=cfg.total_steps, seed=cfg.seed, profile=cfg.profile, monotone=cfg.monotone)
    raise ValueError(f"trainer must be 'logistic', 'window', 'search' or 'ppo', got {cfg.trainer!r}")


def train_nab_policy(data_dir: str | Path, config: NabBenchmarkConfig | None = None, windows_file: str | Path | None = None) -> StreamPolicy:
    """A stream policy trained on every file of a NAB folder plus the seeded synthetic series, its score threshold
    calibrated on them (NAB's corpus-wide sweep): what ``detect --mode stream`` ships as its default."""
    cfg = config or NabBenchmarkConfig()
    corpus = load_nab_dir(data_dir, windows_file)
    series = corpus + synthetic_suite(cfg.synthetic_series, seed=cfg.synthetic_seed)
    feats = featurize_series(series)
    policy = fit_policy(series, feats, cfg)
    threshold = calibrate_threshold(policy, series, feats, cfg.profile)
    policy.metadata.update(
        {"data": str(data_dir), "synthetic_series": cfg.synthetic_series, "synthetic_seed": cfg.synthetic_seed, "score_threshold": threshold}
    )
    return policy


def _held_out_threshold_scores(corpus, scores, train_scores, profile) -> dict[str, dict[str, float]]:
    """Per category: raw/null/perfect/score at the threshold chosen on the other categories only."""
    out = {}
    for cat in sorted({s.category for s in corpus}):
        others = [s for s in corpus if s.category != cat]
        other_scores = [train_scores[cat][s.name] if train_scores else scores[s.name] for s in others]
        thr, _ = nab.best_threshold([nab.prepare_file(s.n_rows, s.windows, profile) for s in others], other_scores)
        members = {s.name: (scores[s.name], s.n_rows, s.windows) for s in corpus if s.category == cat}
        res = nab.score_corpus(members, profile, threshold=thr)
        out[cat] = {
            "raw": res.raw,
            "null": res.null,
            "perfect": res.perfect,
            "score": res.score,
            "threshold": thr,
            "windows": sum(f.n_windows for f in res.files.values()),
            "detected": sum(f.windows_detected for f in res.files.values()),
            "false_positives": sum(f.fp for f in res.files.values()),
        }
    return out


def run_nab_benchmark(
    data_dir: str | Path, out_dir: str | Path, config: NabBenchmarkConfig | None = None, windows_file: str | Path | None = None
) -> list[dict]:
    """Run the benchmark; returns the summary rows (also written to ``out_dir/summary.csv``)."""
    cfg = config or NabBenchmarkConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_nab_dir(data_dir, windows_file)
    cats = {s.name: s.category for s in corpus}
    for m in cfg.methods:
        if m != POLICY:
            from anomaly_gym.detectors.online import BASELINES

            if m not in BASELINES:
                raise ValueError(f"unknown method {m!r}; choose from {[POLICY, *BASELINES]}")
    rows, flags = [], {}
    for method in cfg.methods:
        t0 = time.perf_counter()
        if method == POLICY:
            scores, train_scores = _policy_folds(corpus, cfg, out_dir)
        else:
            scores, train_scores = {s.name: _score_baseline(method, s) for s in corpus}, {}
        seconds = time.perf_counter() - t0
        for s in corpus:
            nab.write_results(out_dir / "results", method, s.name, s.timestamps, s.values.reshape(s.n_rows, -1)[:, 0], scores[s.name], s.labels)
        files = {s.name: (scores[s.name], s.n_rows, s.windows) for s in corpus}
        corpus_res = nab.score_corpus(files, cfg.profile, groups=cats)
        held = _held_out_threshold_scores(corpus, scores, train_scores, cfg.profile)
        flags[method] = {s.name: scores[s.name] >= corpus_res.threshold for s in corpus}
        rows.extend(_summary_rows(method, corpus_res, held, seconds))
        rows.extend(_group_rows(method, nab.score_corpus(files, cfg.profile, threshold="per-file", groups=cats), "per-file", seconds))
        logger.info("%s: NAB %.1f (corpus threshold %.4g) in %.0fs", method, corpus_res.score, corpus_res.threshold, seconds)
    write_summary(out_dir, rows, cfg)
    if cfg.plots:
        plot_series(out_dir / "plots", corpus, flags)
    return rows


COUNTS = ("windows", "detected", "false_positives")


def _row(method: str, category: str, rule: str, threshold: float, g: dict, seconds: float) -> dict:
    head = {"method": method, "category": category, "threshold_rule": rule, "threshold": threshold, "raw": g["raw"], "score": g["score"], "seconds": seconds}
    return head | {k: g[k] for k in COUNTS}


def _group_rows(method: str, res: nab.CorpusScore, rule: str, seconds: float) -> list[dict]:
    """Summary rows of one scoring (per category, then ``ALL``) under one threshold rule."""
    total = {"raw": res.raw, "score": res.score} | {k: sum(g[k] for g in res.groups.values()) for k in COUNTS}
    return [_row(method, cat, rule, res.threshold, g, seconds) for cat, g in [*res.groups.items(), ("ALL", total)]]


def _summary_rows(method: str, corpus_res: nab.CorpusScore, held: dict, seconds: float) -> list[dict]:
    """Rows at the corpus threshold, then at each category's held-out threshold."""
    rows = _group_rows(method, corpus_res, "corpus", seconds)
    rows += [_row(method, cat, "held-out", held[cat]["threshold"], held[cat], seconds) for cat in corpus_res.groups]
    raw, null, perfect = (sum(h[k] for h in held.values()) for k in ("raw", "null", "perfect"))
    total = {"raw": raw, "score": nab.normalized(raw, null, perfect)} | {k: sum(h[k] for h in held.values()) for k in COUNTS}
    return rows + [_row(method, "ALL", "held-out", float("nan"), total, seconds)]


RULES = ("corpus", "held-out", "per-file")
RULE_NOTES = {
    "per-file": (
        "Each file at its own best threshold, chosen with its own labels: not a detector's score,",
        "but an upper bound on what one threshold can reach with these scores. Its gap to the",
        "corpus threshold is what the scores lose by not being comparable across streams.",
        "",
    )
}


def write_summary(out_dir: Path, rows: list[dict], cfg: NabBenchmarkConfig) -> None:
    """``summary.csv`` (every row) and ``summary.md`` (a table per threshold rule)."""
    with open(out_dir / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cats = [c for c in dict.fromkeys(r["category"] for r in rows) if c != "ALL"]
    lines = [
        f"# NAB benchmark ({cfg.profile} profile, leave-one-category-out)",
        "",
        f"Settings: {asdict(cfg)}",
        "",
        "Scores are NAB-normalised (100 perfect, 0 the null detector); a category without windows",
        "shows its raw score (its false positives' cost) in brackets. 'mean' is the mean over the",
        "categories with windows; 'all' scores the corpus as one.",
        "",
    ]
    for rule in RULES:
        lines += [
            f"## {rule} threshold",
            "",
            *RULE_NOTES.get(rule, ()),
            "| method | " + " | ".join(cats) + " | mean | all |",
            "|---|" + "---:|" * (len(cats) + 2),
        ]
        for m in methods:
            got = {r["category"]: r for r in rows if r["method"] == m and r["threshold_rule"] == rule}
            cells, scored = [], []
            for c in cats:
                r = got[c]
                if np.isnan(r["score"]):
                    cells.append(f"({r['raw']:.2f})")
                else:
                    cells.append(f"{r['score']:.1f}")
                    scored.append(r["score"])
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {np.mean(scored):.1f} | {got['ALL']['score']:.1f} |")
        lines.append("")
    lines += _counts_table(rows, methods, cats)
    (out_dir / "summary.md").write_text("\n".join(lines))


def _counts_table(rows: list[dict], methods: list[str], cats: list[str]) -> list[str]:
    """Where the points went at the corpus threshold: windows detected of those scored, and false positives."""
    lines = [
        "## where the points go (corpus threshold): windows detected / windows, false positives",
        "",
        "| method | " + " | ".join(cats) + " | all |",
        "|---|" + "---:|" * (len(cats) + 1),
    ]
    for m in methods:
        got = {r["category"]: r for r in rows if r["method"] == m and r["threshold_rule"] == "corpus"}
        cells = [f"{got[c]['detected']}/{got[c]['windows']}, {got[c]['false_positives']} FP" for c in cats + ["ALL"]]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_series(out_dir: Path, corpus: Sequence[Series], flags: dict[str, dict[str, np.ndarray]]) -> None:
    """One PNG per file: the series, its windows (shaded) and each method's flags (markers below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for s in corpus:
        fig, ax = plt.subplots(figsize=(12, 3.2))
        y = s.values.reshape(s.n_rows, -1)[:, 0]
        ax.plot(s.timestamps, y, lw=0.6, color="0.3")
        for a, b in s.windows:
            ax.axvspan(s.timestamps[a], s.timestamps[b], color="tab:orange", alpha=0.25, lw=0)
        ax.axvline(s.timestamps[nab.probation_length(s.n_rows)], color="0.6", ls=":", lw=0.8)
        lo, span = float(y.min()), float(np.ptp(y)) or 1.0
        for k, (method, f) in enumerate(flags.items()):
            hit = np.flatnonzero(f[s.name])
            ax.scatter(s.timestamps[hit], np.full(len(hit), lo - (0.08 + 0.08 * k) * span), s=9, marker="|", label=method)
        ax.set_title(s.name, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", ncol=len(flags))
        path = out_dir / f"{s.name.removesuffix('.csv')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
