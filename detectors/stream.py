"""Streaming anomaly detection with a policy bundle: :class:`StreamDetector`.

The object follows River's conventions (``learn_one`` / ``score_one`` / ``predict_one``,
one row at a time, ``score_one`` before ``learn_one``) and PySAD's aliases
(``fit_partial`` / ``score_partial``), plus batch ``fit`` / ``decision_function`` /
``predict``.  ``anomaly-gym detect --mode stream`` is a loop over :meth:`StreamDetector.process_one`.

    >>> from anomaly_gym.agents import load_default_bundle
    >>> from anomaly_gym.detectors.stream import StreamDetector
    >>> with StreamDetector(load_default_bundle(scoring_only=True), contamination=0.05) as det:
    ...     for x in rows:                       # 1-D arrays of the feature columns
    ...         score, flag = det.process_one(x)  # NaN and None during the warm-up

**Scores.**  The first ``warmup`` rows only fill a window.  Then the detector bank of the
bundle's featurizer is fitted on the window (the last ``window`` rows), every later row is
featurized with that fit *before* it joins the window, and the policy turns the features
into P(anomaly).  Every ``refit_every`` rows the bank is refitted on the window.

**Flags that keep their rate.**  With ``contamination=C`` a row is flagged when its
smoothed conformal p-value is at most ``C``: its score is ranked among *out-of-sample*
scores of the same fit, never among in-sample scores or another fit's.  Each fit holds out
every 4th row of its window (:func:`split_window`), fits the bank on the others and scores
the held-out rows exactly as live rows are scored (one row at a time, the same code).
Those scores, and then the scores of the live rows this fit scores, form the fit's
reference; the p-value of a score ``s`` among ``n`` reference scores is
``(#{> s} + U * (#{= s} + 1)) / (n + 1)`` with ``U`` uniform on [0, 1) (seeded), so ties,
as in a square wave or a constant stream, are broken at random.  When the held-out and
live rows are exchangeable (a stationary stream), these p-values are independent and
uniform, so each row is flagged with probability exactly ``C``, independently of the
others, from the first scored row on: the flagged share of a block of ``m`` rows varies
only as a binomial(``m``, ``C``) share does (for 1,000 rows and ``C = 0.05``, outside
``C`` +- 40% about once in 250 blocks).  A drifting stream is flagged more until the next
refit catches up.  ``threshold=T`` flags scores above ``T`` instead.

**Refits off the hot path.**  With ``background=True`` (the default) refits run in a
worker process (``python -m anomaly_gym.detectors.stream``, started once, at construction,
so that its imports are paid during the warm-up; it never re-imports the caller's script,
and it runs at a lower priority than the rows being scored).  Rows arriving during a refit
are scored with the current fit, and the new fit is swapped in at the first row after it
is ready.  The worker returns the compiled :class:`~anomaly_gym.envs.stream.FastFeaturizer`
and the held-out rows' scores, computed with the same numpy code as live rows (with a
target head, or a policy that needs torch, the main thread scores the held-out rows when
it swaps the fit in).  The first fit, after the warm-up, is made inline.
``background=False`` refits inline, so that the same stream always gives the same scores
and flags (tests, reproducible runs); a refit then pauses the stream for its duration
(~0.3-0.6 s for 2,048 rows and the default bank).  Call :meth:`close` (or use the
detector as a context manager) to stop the worker.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from anomaly_gym.envs.features import Featurizer, FeaturizerConfig
from anomaly_gym.envs.stream import FastFeaturizer

logger = logging.getLogger(__name__)

#: Every this-many-th row of a window (counting back from the newest) is held out of the
#: fit and scored to calibrate the flags.
HOLDOUT_EVERY = 4
#: The featurizer needs this many rows to fit; held-out rows never take the fit below it.
MIN_FIT_ROWS = 10


def split_window(n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the rows a fit is made on and of the rows it holds out, for a window of ``n_rows``.

    Every :data:`HOLDOUT_EVERY`-th row, counting back from the newest, is held out, as long
    as :data:`MIN_FIT_ROWS` rows are left to fit on.  Interleaving keeps both parts spread
    over the whole window (over every phase of a periodic stream).
    """
    n_hold = min(n_rows // HOLDOUT_EVERY, max(0, n_rows - MIN_FIT_ROWS))
    hold = np.arange(n_rows - 1, -1, -HOLDOUT_EVERY)[:n_hold][::-1]
    keep = np.ones(n_rows, dtype=bool)
    keep[hold] = False
    return np.flatnonzero(keep), hold


@dataclass
class FittedWindow:
    """What fitting one window gives: the compiled featurizer and the held-out rows' features."""

    fast: FastFeaturizer
    held_out_rows: np.ndarray
    held_out_features: np.ndarray
    seconds: float
    held_out_scores: list[float] | None = None
    messages: list[str] = field(default_factory=list)


def fit_window(config: FeaturizerConfig, X: np.ndarray, row_scorer=None) -> FittedWindow:
    """Fit the bank on the window ``X`` less its held-out rows; featurize those rows one by
    one, and score them with ``row_scorer`` (features -> P(anomaly)) when given."""
    t0 = time.perf_counter()
    fit_idx, hold_idx = split_window(len(X))
    fast = FastFeaturizer(Featurizer(config).fit(X[fit_idx]))
    held = X[hold_idx]
    features = np.array([fast.transform_row(x) for x in held], dtype=np.float32).reshape(len(held), fast.n_features)
    scores = None if row_scorer is None else [row_scorer.proba(f) for f in features]
    return FittedWindow(fast, held, features, time.perf_counter() - t0, scores)


def _fit_in_worker(config: FeaturizerConfig, X: np.ndarray, row_scorer) -> FittedWindow:
    """:func:`fit_window` in the worker process; its warnings travel back as messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = fit_window(config, X, row_scorer)
    fitted.messages = list(dict.fromkeys(str(w.message) for w in caught))
    return fitted


def _init_worker(n_threads: int) -> None:
    import os
    import signal

    from threadpoolctl import threadpool_limits

    if hasattr(os, "nice"):
        os.nice(5)  # on busy cores the rows being scored come first, the refit after
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends the worker
    threadpool_limits(n_threads)
    logging.getLogger("anomaly_gym").setLevel(logging.ERROR)  # warnings go back to the parent
    from anomaly_gym.envs.bank import import_estimators

    import_estimators()  # the first fit's imports, paid during the warm-up


def worker_main(argv: list[str] | None = None) -> None:
    """The refit worker process: reads pickled ``(config, window, row_scorer)`` requests
    from stdin, answers each with a pickled ``("ok", FittedWindow)`` or ``("error", text)``
    on stdout, and ends at end of input.  Only its parent talks to it, over its pipes."""
    import pickle
    import sys
    import traceback

    argv = sys.argv[1:] if argv is None else argv
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers on the pipe
    _init_worker(int(argv[0]) if argv else 1)
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:
            return
        try:
            answer = ("ok", _fit_in_worker(*request))
        except Exception:
            answer = ("error", traceback.format_exc())
        pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


class _RefitWorker:
    """A child process that fits windows (:func:`worker_main`), and a thread that waits for it.

    The child is started with ``python -m anomaly_gym.detectors.stream``, not with
    multiprocessing, so that it never re-imports the caller's main script.
    """

    def __init__(self, n_threads: int) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-m", "anomaly_gym.detectors.stream", str(n_threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anomaly-gym-refit")

    def submit(self, *request) -> Future:
        return self.pool.submit(self._call, request)

    def _call(self, request) -> FittedWindow:
        import pickle

        pickle.dump(request, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.flush()
        try:
            status, value = pickle.load(self.proc.stdout)
        except EOFError:
            raise RuntimeError(f"the refit worker process ended (exit code {self.proc.wait()})") from None
        if status != "ok":
            raise RuntimeError(f"the refit worker failed:\n{value}")
        return value

    def close(self, *, busy: bool) -> None:
        """End the child: at once when a refit is running (``busy``), else at the end of its input."""
        import subprocess

        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if busy:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.pool.shutdown(wait=True)
        self.proc.stdout.close()


class ConformalReference:
    """The scores a fit ranks new scores among, and the smoothed conformal p-value of a score.

    Args:
        scores: The fit's held-out rows' scores (the first reference).
        cap: At most this many scores are kept (the oldest leave first).
    """

    def __init__(self, scores, cap: int) -> None:
        scores = [float(s) for s in scores][-cap:]
        self._order: deque[float] = deque(scores)
        self._sorted = sorted(scores)
        self.cap = cap

    def __len__(self) -> int:
        return len(self._sorted)

    def p_value(self, score: float, u: float) -> float:
        """``(#{> score} + u * (#{= score} + 1)) / (n + 1)``; uniform on (0, 1) for an exchangeable score and uniform ``u``."""
        s = self._sorted
        below = bisect.bisect_left(s, score)
        at_most = bisect.bisect_right(s, score)
        return ((len(s) - at_most) + u * (at_most - below + 1)) / (len(s) + 1)

    def add(self, score: float) -> None:
        self._order.append(score)
        bisect.insort(self._sorted, score)
        if len(self._order) > self.cap:
            old = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]


class _Fit:
    """The fit now scoring rows: its featurizer and its reference scores."""

    def __init__(self, number: int, fast: FastFeaturizer, reference: ConformalReference | None) -> None:
        self.number = number
        self.fast = fast
        self.reference = reference


class StreamDetector:
    """Score a stream row by row with a policy bundle; flag a steady share of the rows.

    See the module docstring for how rows are scored, how flags keep their rate and how
    refits run.

    Args:
        bundle: A :class:`~anomaly_gym.agents.PolicyBundle` (its policy, featurizer
            configuration and target head, if any).
        contamination: Share of rows to flag, 0 < C < 1 (default 0.05), by conformal
            p-value among the current fit's out-of-sample scores.
        threshold: Flag scores above this instead (``contamination`` is then ignored).
        warmup: Rows collected before the first fit (at least 10).
        window: Rows each fit is made on (the most recent; at least ``warmup``).
        refit_every: Rows between refits.
        background: Refit in a worker process (default) or inline (deterministic).
        n_threads: CPU threads of the worker's numerical libraries.
        seed: Seed of the tie-breaking draws.

    Example:
        >>> det = StreamDetector(bundle, contamination=0.01, background=False)
        >>> for x in X:
        ...     score = det.score_one(x)      # NaN during the warm-up
        ...     flag = det.predict_one(x)     # None during the warm-up, else 0 or 1
        ...     det.learn_one(x)
    """

    def __init__(
        self,
        bundle,
        *,
        contamination: float | None = 0.05,
        threshold: float | None = None,
        warmup: int = 256,
        window: int = 2048,
        refit_every: int = 1024,
        background: bool = True,
        n_threads: int = 1,
        seed: int = 0,
    ) -> None:
        from anomaly_gym.agents.scoring import PolicyScorer

        if threshold is None and (contamination is None or not 0.0 < contamination < 1.0):
            raise ValueError(f"contamination must be between 0 and 1 (exclusive), got {contamination}")
        if threshold is not None and not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        if warmup < MIN_FIT_ROWS:
            raise ValueError(f"warmup must be at least {MIN_FIT_ROWS} rows (the detectors need {MIN_FIT_ROWS} to fit), got {warmup}")
        if window < warmup:
            raise ValueError(f"window ({window}) must be at least warmup ({warmup})")
        if refit_every < 1:
            raise ValueError(f"refit_every must be a positive number of rows, got {refit_every}")
        self.bundle = bundle
        self.contamination = None if threshold is not None else float(contamination)
        self.threshold = threshold
        self.warmup, self.window, self.refit_every = warmup, window, refit_every
        self.background = background
        self.n_threads = n_threads
        self.seed = seed
        self.scorer = PolicyScorer(bundle)
        self.n_columns: int | None = None
        self.n_seen = 0
        self.n_fits = 0
        self.fit_seconds = 0.0
        self._rows: deque[np.ndarray] = deque(maxlen=window)
        self._since_fit = 0
        self._fit: _Fit | None = None
        self._pending: Future | None = None
        self._last: tuple[int, bytes, float] | None = None
        self._rng = random.Random(seed)
        self._executor: _RefitWorker | None = None
        if background:
            self._start_worker()

    # -- River / PySAD interface ------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._fit is not None

    @property
    def refitting(self) -> bool:
        """Whether a refit is running in the background (rows are scored with the current fit meanwhile)."""
        return self._pending is not None

    def score_one(self, x) -> float:
        """P(anomaly) of row ``x`` with the current fit; NaN before the first fit.  Learns nothing."""
        self._poll()
        if self._fit is None:
            self._check(x)
            return math.nan
        x = self._check(x)
        key = x.tobytes()
        if self._last is not None and self._last[0] == self._fit.number and self._last[1] == key:
            return self._last[2]
        score = self.scorer.row(self._fit.fast.transform_row(x), x)
        self._last = (self._fit.number, key, score)
        return score

    def flag(self, score: float) -> int | None:
        """1 when ``score`` is flagged, else 0; None for NaN (warm-up).  Draws one tie-breaking number."""
        if math.isnan(score):
            return None
        if self.threshold is not None:
            return int(score > self.threshold)
        u = self._rng.random()
        return int(self._fit.reference.p_value(score, u) <= self.contamination)

    def predict_one(self, x) -> int | None:
        """1 when row ``x`` is flagged, else 0; None before the first fit.  Learns nothing."""
        return self.flag(self.score_one(x))

    def learn_one(self, x) -> StreamDetector:
        """Add row ``x`` to the window (and its score to the current fit's reference); refit when due."""
        self._poll()
        x = self._check(x)
        if self._fit is not None and self._fit.reference is not None:
            self._fit.reference.add(self.score_one(x))
        self._rows.append(x)
        self.n_seen += 1
        if self._fit is None:
            if self.n_seen >= self.warmup:
                self._install(fit_window(self.bundle.featurizer_config, self._window()))
            return self
        self._since_fit += 1
        if self._since_fit >= self.refit_every and self._pending is None:
            self._since_fit = 0
            if self._executor is not None:
                self._pending = self._executor.submit(
                    self.bundle.featurizer_config, self._window(), self.scorer.portable_row() if self.threshold is None else None
                )
            else:
                self._install(fit_window(self.bundle.featurizer_config, self._window()))
        return self

    def process_one(self, x) -> tuple[float, int | None]:
        """Score row ``x``, flag it, then learn it: ``(score, flag)``, ``(nan, None)`` in the warm-up."""
        score = self.score_one(x)
        flag = self.flag(score)
        self.learn_one(x)
        return score, flag

    fit_partial = learn_one  # PySAD's names
    score_partial = score_one

    # -- batch interface --------------------------------------------------------------
    def fit(self, X) -> StreamDetector:
        """Forget everything, then fit on the last ``window`` rows of ``X`` (at least 10), inline."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < MIN_FIT_ROWS:
            raise ValueError(f"X must be 2-D with at least {MIN_FIT_ROWS} rows, got shape {X.shape}")
        self._cancel()
        self.n_columns, self.n_seen, self._since_fit, self._fit, self._last = None, 0, 0, None, None
        self._rows.clear()
        for x in X[-self.window :]:
            self._rows.append(self._check(x))
        self.n_seen = len(X)
        self._install(fit_window(self.bundle.featurizer_config, self._window()))
        return self

    def decision_function(self, X) -> np.ndarray:
        """P(anomaly) of every row of ``X`` with the current fit (the batch path: torch, in chunks)."""
        if self._fit is None:
            raise RuntimeError("this StreamDetector has no fit yet: call fit(X) or learn at least `warmup` rows")
        self._poll()
        X = np.asarray(X, dtype=np.float64).reshape(-1, self._fit.fast.n_columns)
        return self.scorer.batch(self._fit.fast.transform(X), X)

    def predict(self, X) -> np.ndarray:
        """Flags (0/1) of every row of ``X`` against the current fit's reference, which they do not join."""
        return np.array([self.flag(float(s)) for s in self.decision_function(X)], dtype=np.int8)

    # -- lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        """Stop the refit worker (a pending refit is dropped)."""
        busy = self._pending is not None and not self._pending.done()
        self._cancel()
        if self._executor is not None:
            self._executor.close(busy=busy)
            self._executor = None

    def __enter__(self) -> StreamDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        rule = f"threshold={self.threshold}" if self.threshold is not None else f"contamination={self.contamination}"
        return (
            f"StreamDetector({rule}, warmup={self.warmup}, window={self.window}, refit_every={self.refit_every}, "
            f"background={self.background}; {self.n_seen} rows seen, {self.n_fits} fits)"
        )

    # -- internals --------------------------------------------------------------------
    def _check(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.n_columns is None:
            if len(x) < 1:
                raise ValueError("a stream needs at least one feature column")
            self.scorer.check_width(len(x))
            self.n_columns = len(x)
        if len(x) != self.n_columns:
            raise ValueError(f"row has {len(x)} values, expected {self.n_columns}")
        if not np.isfinite(x).all():
            raise ValueError("row has a NaN or infinite value")
        return x

    def _window(self) -> np.ndarray:
        return np.array(self._rows, dtype=np.float64).reshape(-1, self.n_columns)

    def _install(self, fitted: FittedWindow) -> None:
        """Make ``fitted`` the current fit: score its held-out rows as live rows are scored."""
        feature_log = logging.getLogger("anomaly_gym.envs.features")
        for message in fitted.messages:
            feature_log.warning("%s", message)
        reference = None
        if self.threshold is None:
            scores = fitted.held_out_scores
            if scores is None:  # scored here as live rows are: with the same code
                scores = [self.scorer.row(f, x) for f, x in zip(fitted.held_out_features, fitted.held_out_rows)]
            reference = ConformalReference(scores, cap=len(scores) + max(self.window, self.refit_every))
        self.n_fits += 1
        self.fit_seconds += fitted.seconds
        self._fit = _Fit(self.n_fits, fitted.fast, reference)

    def _poll(self) -> None:
        if self._pending is not None and self._pending.done():
            pending, self._pending = self._pending, None
            self._install(pending.result())

    def _cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _start_worker(self) -> None:
        self._executor = _RefitWorker(self.n_threads)


if __name__ == "__main__":  # the refit worker; its answers must pickle the canonical module's classes
    from anomaly_gym.detectors.stream import worker_main as _worker_main

    _worker_main()
