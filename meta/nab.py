"""NAB scoring: the Numenta Anomaly Benchmark's score, written from its published definition.

Lavin and Ahmad, "Evaluating Real-time Anomaly Detection Algorithms - the Numenta Anomaly
Benchmark" (ICMLA 2015), and NAB's documentation define the score used here:

- **Windows.**  Each labelled anomaly sits in an anomaly window (``combined_windows.json``:
  ``[start, end]`` timestamps, inclusive).  Only the *first* detection in a window counts.
- **Scaled sigmoid.**  ``sigma(y) = 2 / (1 + exp(5 y)) - 1`` (and ``-1`` for ``y > 3``).  A
  detection at row ``i`` of a window whose rows run ``left..right`` (``W = right - left + 1``
  rows) has ``y = -(right - i + 1) / W``: ``y = -1`` at the window's first row, close to 0 at
  its last.  It earns ``A_TP * sigma(y) / sigma(-1)``, so ``A_TP`` for the earliest detection.
- **False positives.**  A detection outside every window earns ``A_FP * sigma(y)`` with
  ``y = (i - right_prev) / (W_prev - 1)`` measured from the end of the preceding window (a
  detection just after a window costs little, one far from it costs ``A_FP``), or
  ``-A_FP`` when no window precedes it.
- **Missed windows** cost ``A_FN`` each; true negatives earn nothing (``A_TN`` is listed
  for completeness, as NAB lists it, but no score term uses it).
- **Probationary period.**  The first ``min(floor(0.15 n), 750)`` rows of an ``n``-row file
  are the detector's learning time: detections there are ignored, and a window's rows that
  fall there are not scored.
- **Profiles.**  ``standard`` (A_TP 1, A_FP 0.11, A_FN 1), ``reward_low_FP_rate``
  (A_FP 0.22) and ``reward_low_FN_rate`` (A_FN 2).
- **Threshold.**  A detector emits a score per row; a row is a detection when its score is
  at least the threshold.  One threshold serves the whole corpus: the one (among all
  distinct scores, and "flag nothing") that maximises the corpus' raw score.
- **Normalisation.**  ``100 * (raw - null) / (perfect - null)``, where *perfect* is
  ``A_TP`` times the number of windows and *null* the raw score of the null detector (a
  constant score, which flags nothing at its best threshold): 100 is perfect, 0 is no
  better than never flagging.

``tests/meta/test_nab.py`` checks hand-computed cases, and the per-window and per-detection
scores that NAB's own published results file for Numenta HTM on
``realTraffic/speed_7578.csv`` records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from anomaly_gym.envs.series import load_windows, windows_to_rows  # noqa: F401  (NAB's file layout, re-exported)


@dataclass(frozen=True)
class Profile:
    """An application profile: the weights of NAB's score terms."""

    name: str
    a_tp: float
    a_fp: float
    a_tn: float
    a_fn: float


#: NAB's three application profiles.
PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", a_tp=1.0, a_fp=0.11, a_tn=1.0, a_fn=1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", a_tp=1.0, a_fp=0.22, a_tn=1.0, a_fn=1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", a_tp=1.0, a_fp=0.11, a_tn=1.0, a_fn=2.0),
}

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750  # 15 % of 5,000 rows

#: Row kinds in :class:`PreparedFile`.
PROBATION, OUTSIDE = -2, -1


def get_profile(profile: str | Profile) -> Profile:
    """A :class:`Profile` from its name (or the profile itself)."""
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown NAB profile {profile!r}; choose from {sorted(PROFILES)}")
    return PROFILES[profile]


def scaled_sigmoid(y: np.ndarray | float) -> np.ndarray:
    """NAB's scaled sigmoid ``2 / (1 + exp(5 y)) - 1``, and ``-1`` where ``y > 3``."""
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(over="ignore"):
        out = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y > 3.0, -1.0, out)


def probation_length(n_rows: int) -> int:
    """Rows of NAB's probationary period: ``min(floor(0.15 n), 750)``."""
    return int(min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_MAX_ROWS))


def check_windows(windows: Sequence[tuple[int, int]], n_rows: int) -> list[tuple[int, int]]:
    """``windows`` as sorted, disjoint, inclusive row ranges inside ``0..n_rows-1``."""
    out = sorted((int(a), int(b)) for a, b in windows)
    for k, (a, b) in enumerate(out):
        if not 0 <= a <= b < n_rows:
            raise ValueError(f"window {(a, b)} is not an inclusive row range inside 0..{n_rows - 1}")
        if k and a <= out[k - 1][1]:
            raise ValueError(f"windows {out[k - 1]} and {(a, b)} overlap; NAB windows are disjoint")
    return out


@dataclass(frozen=True)
class PreparedFile:
    """One file's rows as NAB scores them.

    Attributes:
        kind: Per row, the index of the window it lies in, :data:`OUTSIDE`, or
            :data:`PROBATION` (rows never scored).
        weight: Per row, what a detection there is worth (positive in a window, the
            false-positive cost outside, 0 in probation).
        n_windows: Windows that have at least one scored row (a missed one costs ``A_FN``).
    """

    kind: np.ndarray
    weight: np.ndarray
    n_windows: int
    profile: Profile

    @property
    def n_rows(self) -> int:
        return len(self.kind)


def prepare_file(n_rows: int, windows: Sequence[tuple[int, int]], profile: str | Profile = "standard") -> PreparedFile:
    """What a detection at each row of an ``n_rows``-row file with ``windows`` is worth."""
    prof = get_profile(profile)
    if int(n_rows) < 1:
        raise ValueError(f"a file needs at least one row, got {n_rows}")
    n_rows = int(n_rows)
    windows = check_windows(windows, n_rows)
    idx = np.arange(n_rows)
    kind = np.full(n_rows, OUTSIDE, dtype=np.int64)
    weight = np.full(n_rows, -prof.a_fp, dtype=np.float64)  # no preceding window: -A_FP
    max_tp = float(scaled_sigmoid(-1.0))
    for k, (left, right) in enumerate(windows):
        width = right - left + 1
        kind[left : right + 1] = k
        weight[left : right + 1] = prof.a_tp * scaled_sigmoid(-(right - idx[left : right + 1] + 1) / width) / max_tp
        end = windows[k + 1][0] if k + 1 < len(windows) else n_rows
        if end > right + 1:
            # NAB divides by (W - 1); a one-row window puts every later row at the far tail.
            past = (idx[right + 1 : end] - right) / (width - 1) if width > 1 else np.full(end - right - 1, np.inf)
            weight[right + 1 : end] = prof.a_fp * scaled_sigmoid(past)
    probation = probation_length(n_rows)
    kind[:probation] = PROBATION
    weight[:probation] = 0.0
    n_windows = sum(1 for left, right in windows if right >= probation)
    # windows renumbered so that only scored ones count
    if n_windows < len(windows):
        first = len(windows) - n_windows
        kind[kind >= 0] -= first
    return PreparedFile(kind=kind, weight=weight, n_windows=n_windows, profile=prof)


@dataclass(frozen=True)
class FileScore:
    """The raw NAB score of one file's detections, with NAB's counts (rows, not windows)."""

    score: float
    tp: int
    fp: int
    tn: int
    fn: int
    windows_detected: int
    n_windows: int


def score_detections(prepared: PreparedFile, detections: np.ndarray) -> FileScore:
    """The raw score of boolean ``detections`` (one per row) on a prepared file."""
    det = np.asarray(detections, dtype=bool)
    if det.shape != (prepared.n_rows,):
        raise ValueError(f"detections must hold one boolean per row ({prepared.n_rows}), got shape {det.shape}")
    kind, weight = prepared.kind, prepared.weight
    outside = kind == OUTSIDE
    inside = kind >= 0
    score = float(weight[det & outside].sum())
    detected = 0
    for k in range(prepared.n_windows):
        hits = np.flatnonzero(det & (kind == k))
        if len(hits):
            score += float(weight[hits[0]])  # the first detection: the largest weight in the window
            detected += 1
        else:
            score -= prepared.profile.a_fn
    return FileScore(
        score=score,
        tp=int((det & inside).sum()),
        fp=int((det & outside).sum()),
        tn=int((~det & outside).sum()),
        fn=int((~det & inside).sum()),
        windows_detected=detected,
        n_windows=prepared.n_windows,
    )


def sweep_thresholds(prepared: Sequence[PreparedFile], scores: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The corpus' raw score at every candidate threshold, by one pass over the sorted scores.

    Returns:
        ``(thresholds, totals)``, thresholds in decreasing order starting with ``inf`` (flag
        nothing); ``totals[j]`` is the corpus score when rows with score ``>= thresholds[j]``
        are detections.
    """
    if len(prepared) != len(scores):
        raise ValueError(f"one score array per file: {len(scores)} arrays for {len(prepared)} files")
    s_all, w_all, win_all = [], [], []
    base, offset = 0.0, 0
    for prep, sc in zip(prepared, scores):
        sc = np.asarray(sc, dtype=np.float64)
        if sc.shape != (prep.n_rows,):
            raise ValueError(f"scores must hold one value per row ({prep.n_rows}), got shape {sc.shape}")
        if not np.isfinite(sc).all():
            raise ValueError("anomaly scores must be finite; replace NaN or infinite scores before scoring")
        keep = prep.kind != PROBATION
        s_all.append(sc[keep])
        w_all.append(prep.weight[keep])
        k = prep.kind[keep]
        win_all.append(np.where(k >= 0, k + offset, -1))
        offset += prep.n_windows
        base -= prep.profile.a_fn * prep.n_windows
    s = np.concatenate(s_all) if s_all else np.empty(0)
    w = np.concatenate(w_all) if w_all else np.empty(0)
    win = np.concatenate(win_all) if win_all else np.empty(0, dtype=np.int64)
    order = np.argsort(-s, kind="stable")
    s, w, win = s[order], w[order], win[order]
    a_fn = prepared[0].profile.a_fn if prepared else 1.0
    delta = np.where(win < 0, w, 0.0)
    # in a window, the score part is the best (earliest) detection so far: -A_FN before any
    in_win = np.flatnonzero(win >= 0)
    if len(in_win):
        by_win = in_win[np.argsort(win[in_win], kind="stable")]  # grouped by window, each in score order
        groups = np.split(by_win, np.flatnonzero(np.diff(win[by_win])) + 1)
        for g in groups:
            best = np.maximum.accumulate(np.concatenate([[-a_fn], w[g]]))
            delta[g] = np.diff(best)
    totals = base + np.cumsum(delta)
    if len(s) == 0:  # no rows at all: only "flag nothing"
        return np.array([np.inf]), np.array([base])
    last_of_run = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # ties detect together
    thresholds = np.concatenate([[np.inf], s[last_of_run]])
    return thresholds, np.concatenate([[base], totals[last_of_run]])


def best_threshold(prepared: Sequence[PreparedFile], scores: Sequence[np.ndarray]) -> tuple[float, float]:
    """NAB's corpus-wide threshold: ``(threshold, raw corpus score)``; ties go to the higher threshold."""
    thresholds, totals = sweep_thresholds(prepared, scores)
    j = int(np.argmax(totals))
    return float(thresholds[j]), float(totals[j])


def normalized(raw: float, null: float, perfect: float) -> float:
    """``100 * (raw - null) / (perfect - null)``; NaN when there is nothing to detect."""
    if perfect == null:
        return float("nan")
    return 100.0 * (raw - null) / (perfect - null)


def null_score(prepared: Sequence[PreparedFile]) -> float:
    """The raw score of NAB's null detector (a constant score), at its own best threshold."""
    return best_threshold(prepared, [np.full(p.n_rows, 0.5) for p in prepared])[1]


def perfect_score(prepared: Sequence[PreparedFile], n_windows: int | None = None) -> float:
    """``A_TP`` times the number of windows (all of them, as NAB counts, unless given)."""
    count = sum(p.n_windows for p in prepared) if n_windows is None else n_windows
    return prepared[0].profile.a_tp * count if prepared else 0.0


@dataclass
class CorpusScore:
    """NAB scores of one detector on a corpus, at one threshold."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    score: float
    files: dict[str, FileScore] = field(default_factory=dict)
    groups: dict[str, dict[str, float]] = field(default_factory=dict)


def score_corpus(
    files: Mapping[str, tuple[np.ndarray, int, Sequence[tuple[int, int]]]],
    profile: str | Profile = "standard",
    *,
    threshold: float | str | None = None,
    groups: Mapping[str, str] | None = None,
) -> CorpusScore:
    """Score a detector on a corpus the NAB way.

    Args:
        files: ``name -> (scores, n_rows, windows)``; windows are inclusive row ranges.
        profile: A profile name or :class:`Profile`.
        threshold: The detection threshold; ``None`` sweeps for the corpus-wide best;
            ``"per-file"`` gives every file its own best threshold (chosen with that file's
            labels: an upper bound on what one corpus-wide threshold can reach with these
            scores; the result's ``threshold`` is then NaN).
        groups: ``name -> group`` (for example the NAB category): each group is also
            normalised on its own, at the same threshold.

    Returns:
        A :class:`CorpusScore`; ``groups[g]`` holds ``raw``, ``null``, ``perfect`` and
        ``score`` (NaN for a group without windows, whose raw score counts only false
        positives), and where the points went: ``windows`` scored, ``detected`` of them,
        and ``false_positives`` (flagged rows outside every window).
    """
    prof = get_profile(profile)
    names = list(files)
    if not names:
        raise ValueError("no files to score")
    prepared = {n: prepare_file(files[n][1], files[n][2], prof) for n in names}
    scores = {n: np.asarray(files[n][0], dtype=np.float64) for n in names}
    if isinstance(threshold, str):
        if threshold != "per-file":
            raise ValueError(f"threshold must be a number, None (the corpus-wide sweep) or 'per-file', got {threshold!r}")
        cuts = {n: best_threshold([prepared[n]], [scores[n]])[0] for n in names}
        threshold = float("nan")
    else:
        if threshold is None:
            threshold, _ = best_threshold([prepared[n] for n in names], [scores[n] for n in names])
        cuts = dict.fromkeys(names, threshold)
    per_file = {n: score_detections(prepared[n], scores[n] >= cuts[n]) for n in names}
    result = CorpusScore(profile=prof.name, threshold=float(threshold), raw=0.0, null=0.0, perfect=0.0, score=0.0, files=per_file)

    def summary(members: list[str]) -> dict[str, float]:
        raw = sum(per_file[n].score for n in members)
        null = null_score([prepared[n] for n in members])
        perfect = prof.a_tp * sum(len(files[n][2]) for n in members)
        return {
            "raw": raw,
            "null": null,
            "perfect": perfect,
            "score": normalized(raw, null, perfect),
            "windows": sum(per_file[n].n_windows for n in members),
            "detected": sum(per_file[n].windows_detected for n in members),
            "false_positives": sum(per_file[n].fp for n in members),
        }

    total = summary(names)
    result.raw, result.null, result.perfect, result.score = total["raw"], total["null"], total["perfect"], total["score"]
    if groups is not None:
        for g in sorted(set(groups[n] for n in names)):
            result.groups[g] = summary([n for n in names if groups[n] == g])
    return result


# -- NAB's file layout --------------------------------------------------------------------------


def results_path(root: str | Path, detector: str, name: str) -> Path:
    """NAB's results file of ``detector`` on ``category/file.csv``: ``root/detector/category/detector_file.csv``."""
    category, _, file = name.rpartition("/")
    return Path(root) / detector / category / f"{detector}_{file}"


def write_results(root: str | Path, detector: str, name: str, timestamps: np.ndarray, values: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> Path:
    """Write one results file in NAB's layout (``timestamp,value,anomaly_score,label``)."""
    import pandas as pd

    path = results_path(root, detector, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(np.asarray(timestamps)).strftime("%Y-%m-%d %H:%M:%S"),
            "value": np.asarray(values),
            "anomaly_score": np.asarray(scores, dtype=np.float64),
            "label": np.asarray(labels, dtype=np.int64),
        }
    )
    frame.to_csv(path, index=False)
    return path


def read_results(root: str | Path, detector: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(timestamps, anomaly_score)`` of a NAB-layout results file."""
    import pandas as pd

    path = results_path(root, detector, name)
    if not path.is_file():
        raise FileNotFoundError(f"no results file for {detector} on {name}: {path}")
    frame = pd.read_csv(path)
    for col in ("timestamp", "anomaly_score"):
        if col not in frame:
            raise ValueError(f"{path} has no {col!r} column; NAB results files hold timestamp,value,anomaly_score,label")
    return pd.to_datetime(frame["timestamp"]).to_numpy(), frame["anomaly_score"].to_numpy(dtype=np.float64)
