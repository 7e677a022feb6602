"""A stream policy evaluated in numpy, and the streaming scorer that drives it row by row.

The streaming path must start fast and stay small (no torch, scikit-learn or PyOD), so a
trained policy is stored as its layers in a JSON file and evaluated here without SB3.
:func:`policy_margin` is the one function that evaluates the layers; it can be swapped
for a shared numpy evaluator without touching the scorer.

:class:`TemporalScorer` is a self-contained online detector with River/PySAD conventions
(``score_one`` / ``learn_one``, and ``process_one`` = score then learn): temporal features
(:class:`~anomaly_gym.envs.temporal.TemporalFeaturizer`), plus the scorer's own "rows
since I last flagged", through the policy, to P(anomaly).  A row is flagged (and the
``since_flag`` feature reset) when P(anomaly) reaches ``flag_threshold``; the score itself
is what a user thresholds (NAB sweeps one threshold over the whole corpus).
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from anomaly_gym.envs.stream_env import OBSERVATION_NAMES, since_flag_feature
from anomaly_gym.envs.temporal import TemporalConfig, TemporalFeaturizer, to_epoch_seconds

FORMAT = "anomaly-gym/stream-policy"
FORMAT_VERSION = 1


def policy_margin(layers: Sequence[tuple[np.ndarray, np.ndarray]], obs: np.ndarray, activation: str = "tanh") -> np.ndarray:
    """The policy's preference for "anomaly" over "normal" (a logit difference) for rows of ``obs``.

    ``layers`` are ``(W, b)`` pairs, ``y = x @ W.T + b``; hidden layers are followed by
    ``activation`` (SB3's default ``tanh``, or ``relu``); the last layer has one output.
    """
    x = np.asarray(obs, dtype=np.float64)
    for k, (w, b) in enumerate(layers):
        x = x @ np.asarray(w, dtype=np.float64).T + np.asarray(b, dtype=np.float64)
        if k < len(layers) - 1:
            x = np.tanh(x) if activation == "tanh" else np.maximum(x, 0.0)
    return x[..., 0]


@dataclass
class StreamPolicy:
    """A trained stream policy: its layers, the observation it expects, and how it was made.

    Attributes:
        layers: ``(W, b)`` pairs; the last maps to one output, the anomaly margin.
        observation_names: The features, in order (:data:`OBSERVATION_NAMES`).
        activation: Of hidden layers.
        flag_threshold: P(anomaly) at which the scorer counts its own flag.
        score_threshold: The cut on the score that flags a row in ``detect``: the best of
            NAB's corpus-wide sweep over the series it was trained on (the features are
            stream-relative, so one cut serves every stream).
        gate_rows: 0, or report the rise of P(anomaly) over the largest of the previous
            ``gate_rows`` rows' P(anomaly) (0 when the row is no new high): one high score
            per event, where NAB rewards the first detection in a window and charges every
            later one outside it.
        metadata: Training series, seed, steps, validation figures.
    """

    layers: list[tuple[np.ndarray, np.ndarray]]
    observation_names: tuple[str, ...] = OBSERVATION_NAMES
    activation: str = "tanh"
    flag_threshold: float = 0.5
    score_threshold: float = 0.5
    gate_rows: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a stream policy needs at least one layer")
        width = len(self.observation_names)
        self.layers = [(np.asarray(w, dtype=np.float64).reshape(-1, np.shape(w)[-1]), np.asarray(b, dtype=np.float64).reshape(-1)) for w, b in self.layers]
        if self.layers[0][0].shape[1] != width:
            raise ValueError(f"the first layer takes {self.layers[0][0].shape[1]} inputs, but the policy observes {width} features")
        if self.layers[-1][0].shape[0] != 1:
            raise ValueError("the last layer must have one output (the anomaly margin)")
        if int(self.gate_rows) < 0:
            raise ValueError(f"gate_rows must not be negative, got {self.gate_rows}")
        self.gate_rows = int(self.gate_rows)
        if not 0.0 <= float(self.score_threshold) <= 1.0:
            raise ValueError(f"score_threshold must be a probability in [0, 1], got {self.score_threshold}")
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu', got {self.activation!r}")
        if tuple(self.observation_names) != OBSERVATION_NAMES:
            raise ValueError("this policy was trained on other stream features; retrain it with this version")
        self._linear = None
        if len(self.layers) == 1:  # the common case: a plain-Python dot product per row is fastest
            self._linear = (self.layers[0][0][0].tolist(), float(self.layers[0][1][0]))

    def margin(self, obs: np.ndarray) -> np.ndarray:
        """Anomaly margins of rows of observations."""
        return policy_margin(self.layers, obs, self.activation)

    def proba(self, obs: np.ndarray) -> np.ndarray:
        """P(anomaly) of rows of observations."""
        return 1.0 / (1.0 + np.exp(-self.margin(obs)))

    def proba_one(self, obs: Sequence[float]) -> float:
        """P(anomaly) of one observation (a list of floats)."""
        if self._linear is not None:
            w, b = self._linear
            m = b + sum(wi * xi for wi, xi in zip(w, obs))
        else:
            m = float(self.margin(np.asarray(obs, dtype=np.float64)[None, :])[0])
        return 1.0 / (1.0 + math.exp(-m)) if m > -700 else 0.0

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the policy as JSON (no pickle: safe to load from anywhere)."""
        path = Path(path)
        doc = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "activation": self.activation,
            "flag_threshold": self.flag_threshold,
            "score_threshold": self.score_threshold,
            "gate_rows": self.gate_rows,
            "observation_names": list(self.observation_names),
            "layers": [{"W": w.tolist(), "b": b.tolist()} for w, b in self.layers],
            "metadata": self.metadata,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "StreamPolicy":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"stream policy not found: {path}")
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a stream policy file (JSON expected: {exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{path} is not a stream policy file (format {FORMAT!r} expected)")
        if int(doc.get("version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{path} has stream policy format {doc['version']}; this version reads up to {FORMAT_VERSION}")
        return cls(
            layers=[(np.asarray(layer["W"]), np.asarray(layer["b"])) for layer in doc["layers"]],
            observation_names=tuple(doc["observation_names"]),
            activation=doc.get("activation", "tanh"),
            flag_threshold=float(doc.get("flag_threshold", 0.5)),
            score_threshold=float(doc.get("score_threshold", doc.get("flag_threshold", 0.5))),
            gate_rows=int(doc.get("gate_rows", 0)),
            metadata=dict(doc.get("metadata", {})),
        )


class RisingGate:
    """The rise of a score over the largest of the previous ``rows`` scores (a sliding maximum, O(1) per row).

    ``rows = 0`` passes scores through.  A tiny share of the score itself (1e-9) keeps the
    order among rows that are no new high, so that a threshold sweep sees distinct values.
    """

    def __init__(self, rows: int) -> None:
        self.rows = int(rows)
        self._i = 0
        self._max: deque[tuple[int, float]] = deque()  # (row, score), scores decreasing

    def peek(self, p: float) -> float:
        """The gated score of ``p`` without remembering it."""
        if self.rows <= 0:
            return p
        q = self._max
        while q and q[0][0] < self._i - self.rows:
            q.popleft()
        return max(0.0, p - q[0][1]) + 1e-9 * p if q else p

    def __call__(self, p: float) -> float:
        out = self.peek(p)
        if self.rows <= 0:
            return out
        q = self._max
        while q and q[-1][1] <= p:
            q.pop()
        q.append((self._i, p))
        self._i += 1
        return out


def rising_gate(scores: np.ndarray, rows: int) -> np.ndarray:
    """:class:`RisingGate` over a whole series at once (the same values)."""
    s = np.asarray(scores, dtype=np.float64)
    if rows <= 0 or len(s) == 0:
        return s
    from scipy.ndimage import maximum_filter1d

    past = maximum_filter1d(s, size=rows, origin=(rows - 1) // 2, mode="nearest")  # max of s[i - rows + 1 .. i]
    prev = np.concatenate([[np.nan], past[:-1]])
    out = np.maximum(s - prev, 0.0) + 1e-9 * s
    out[0] = s[0]
    return out


class TemporalScorer:
    """Score a stream row by row with temporal features and a stream policy.

    Args:
        policy: A :class:`StreamPolicy`.
        n_columns: Value columns per row.
        config: Featurizer settings.

    Example:
        >>> scorer = TemporalScorer(StreamPolicy.load("stream.policy.json"))
        >>> for ts, value in rows:                      # ts in seconds since 1970
        ...     p = scorer.process_one(value, ts)        # P(anomaly), then the row is learned
    """

    def __init__(self, policy: StreamPolicy, n_columns: int = 1, config: TemporalConfig | None = None) -> None:
        if not isinstance(policy, StreamPolicy):
            raise TypeError(f"policy must be a StreamPolicy, got {type(policy).__name__}")
        self.policy = policy
        self.featurizer = TemporalFeaturizer(n_columns, config)
        self._since: int | None = None
        self._gate = RisingGate(policy.gate_rows)

    def score_one(self, values: Sequence[float] | float, timestamp: float) -> float:
        """P(anomaly) of a row, without learning it."""
        feats = self.featurizer.score_one(values, timestamp)
        feats.append(since_flag_feature(self._since))
        return self._gate.peek(self.policy.proba_one(feats))

    def learn_one(self, values: Sequence[float] | float, timestamp: float) -> "TemporalScorer":
        """Learn a row (its features, and whether the scorer flags it)."""
        self.process_one(values, timestamp)
        return self

    def process_one(self, values: Sequence[float] | float, timestamp: float) -> float:
        """P(anomaly) of a row from the stream's past, then learn the row."""
        feats = self.featurizer.process_one(values, timestamp)
        feats.append(since_flag_feature(self._since))
        p = self.policy.proba_one(feats)
        self._since = 0 if p >= self.policy.flag_threshold else (None if self._since is None else self._since + 1)
        return self._gate(p)

    def score_series(self, values: np.ndarray, timestamps) -> np.ndarray:
        """P(anomaly) of every row of a series, in order (float64)."""
        vals = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        secs = to_epoch_seconds(timestamps)
        if len(secs) != len(vals):
            raise ValueError(f"{len(secs)} timestamps for {len(vals)} rows")
        rows = vals.tolist()
        return np.array([self.process_one(r, t) for r, t in zip(rows, secs.tolist())], dtype=np.float64)


def score_with_feedback(policy: StreamPolicy, features: np.ndarray) -> np.ndarray:
    """P(anomaly) of precomputed temporal features (rows in time order), with the scorer's own flag feedback.

    The same scores as :meth:`TemporalScorer.score_series` on the series the features
    came from (up to the float32 rounding of cached features), for evaluation where the
    features are cached.
    """
    feats = np.asarray(features, dtype=np.float64)
    out = np.empty(len(feats))
    since: int | None = None
    for i, row in enumerate(feats.tolist()):
        row.append(since_flag_feature(since))
        p = policy.proba_one(row)
        out[i] = p
        since = 0 if p >= policy.flag_threshold else (None if since is None else since + 1)
    return rising_gate(out, policy.gate_rows)


#: Where the shipped default stream policy lies, inside the ``anomaly_gym.agents`` package.
DEFAULT_STREAM_POLICY = ("models", "default.stream.policy.json")


def default_stream_policy_path() -> Path:
    """The shipped default stream policy's path (found without importing ``anomaly_gym.agents``,
    whose bundles need torch)."""
    import importlib.util

    spec = importlib.util.find_spec("anomaly_gym.agents")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the anomaly_gym.agents package is not installed")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*DEFAULT_STREAM_POLICY)


def load_default_stream_policy() -> StreamPolicy:
    """The stream policy shipped with the package (``anomaly-gym nab train`` makes it)."""
    return StreamPolicy.load(default_stream_policy_path())
