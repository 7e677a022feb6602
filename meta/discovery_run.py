"""One analyst's discovery session on an unlabelled table, with its answers saved after each one.

:class:`DiscoveryRun` puts a discovery strategy (a trained :class:`~anomaly_gym.agents.discover.DiscoverBundle`
through :class:`~anomaly_gym.meta.discover.PolicyStrategy`, or the untrained
:class:`~anomaly_gym.meta.discover.FeedbackGreedyStrategy`) in front of a table of rows and
keeps the answers in a JSON state file, rewritten atomically after every answer, so that no
answer is lost to a crash or Ctrl-C.  ``DiscoveryRun.resume`` replays a state file: the
strategies are deterministic given the rows, the model and the seed, so the same rows are
shown again in the same order and each recorded answer is fed back; a state file written for
other rows, another model, seed or budget is refused.

Answers: 1 (anomaly), 0 (normal) or ``None`` (skipped: the analyst could not tell).  A
skipped row is never shown again; the strategy learns it as not-anomalous (it cannot take
"unknown"), and it is written as unlabelled.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STATE_FORMAT = "anomaly-gym-discovery-state"
#: ``model`` naming the discovery bundle shipped with the package.
DEFAULT_MODEL = "default"


@dataclass
class DiscoveryRun:
    """The rows, the strategy and the answers so far.

    Args:
        X: The rows' feature values, shape (n, d), finite.
        budget: Rows the analyst will check at most.
        model: Path of a discovery bundle, ``"default"`` for the shipped one
            (:func:`~anomaly_gym.agents.discover.load_default_discover_bundle`), or ``None``
            for the untrained feedback-greedy strategy.
        seed: Seed of the candidate pool's random slots and of the featurizer.
        state_path: Where the answers are saved after each one (``None``: not saved).
        data_id: What identifies the input (default: a hash of ``X``).
    """

    X: np.ndarray
    budget: int = 100
    model: str | None = None
    seed: int = 0
    state_path: Path | None = None
    data_id: str = ""
    answers: list[tuple[int, int | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.X = np.asarray(self.X, dtype=np.float64)
        if self.X.ndim != 2 or len(self.X) == 0:
            raise ValueError("no rows to discover in: the input holds no valid data row")
        if not np.isfinite(self.X).all():
            raise ValueError("the rows must be finite numbers (drop or mark the bad rows first)")
        if not 1 <= self.budget <= len(self.X):
            raise ValueError(f"--budget must be between 1 and the number of valid rows ({len(self.X)}), got {self.budget}")
        self.data_id = self.data_id or hashlib.sha256(np.ascontiguousarray(self.X).tobytes()).hexdigest()
        self.strategy = self._strategy()
        self._pending: int | None = None

    # -- the loop --------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return len(self.answers) >= self.budget

    def next_row(self) -> int:
        """The index of the row to show next (the same until it is answered)."""
        if self.done:
            raise ValueError(f"the budget of {self.budget} rows is spent")
        if self._pending is None:
            self._pending = int(self.strategy.select())
        return self._pending

    def answer(self, label: int | None) -> None:
        """Record the answer for :meth:`next_row`'s row and save the state."""
        if label not in (0, 1, None):
            raise ValueError(f"an answer is 1 (anomaly), 0 (normal) or None (skip), got {label!r}")
        row = self.next_row()
        self.strategy.observe(row, 1 if label == 1 else 0)
        self.answers.append((row, label))
        self._pending = None
        self.save()

    @property
    def found(self) -> int:
        return sum(1 for _, label in self.answers if label == 1)

    def labels(self) -> np.ndarray:
        """Per row: 1, 0, or -1 (not shown, or skipped)."""
        out = np.full(len(self.X), -1, dtype=np.int8)
        for row, label in self.answers:
            if label is not None:
                out[row] = label
        return out

    def deviations(self, row: int, top: int = 5) -> list[tuple[int, float]]:
        """(column, robust z-score) of the row's ``top`` most deviating columns (median/MAD of all rows)."""
        med = np.median(self.X, axis=0)
        mad = np.median(np.abs(self.X - med), axis=0) * 1.4826
        scale = np.where(mad > 0, mad, np.where(self.X.std(axis=0) > 0, self.X.std(axis=0), 1.0))
        z = (self.X[row] - med) / scale
        order = np.argsort(-np.abs(z), kind="stable")[:top]
        return [(int(j), float(z[j])) for j in order]

    # -- state -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "version": 1,
            "data_id": self.data_id,
            "n_rows": len(self.X),
            "budget": self.budget,
            "model": self.model,
            "seed": self.seed,
            "answers": [[row, label] for row, label in self.answers],
        }

    def save(self) -> None:
        """Write the state atomically (a crash leaves the old or the new file, never half of one)."""
        if self.state_path is None:
            return
        path = Path(self.state_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(self.to_dict(), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def resume(cls, state_path: Path, X: np.ndarray, *, data_id: str = "", save_to: Path | None = None) -> DiscoveryRun:
        """Continue the session saved in ``state_path`` on the same rows."""
        state = _read_state(state_path)
        run = cls(X, budget=state["budget"], model=state["model"], seed=state["seed"], state_path=None, data_id=data_id)
        if state["data_id"] != run.data_id or state["n_rows"] != len(run.X):
            raise ValueError(
                f"{state_path} was saved for other data ({state['n_rows']} rows, another content); "
                "resume with the same input file, or start a new session with --state NEW"
            )
        for k, (row, label) in enumerate(state["answers"]):
            shown = run.next_row()
            if shown != row:
                raise ValueError(
                    f"{state_path}: answer {k + 1} was for row {row}, but this session shows row {shown} there; "
                    "the model or the software changed since it was saved"
                )
            run.answer(label)
        run.state_path = Path(save_to or state_path)
        return run

    # -- internals -------------------------------------------------------------------
    def _strategy(self):
        from anomaly_gym.detectors.active import DiscoveryData
        from anomaly_gym.envs.discover import default_prior
        from anomaly_gym.envs.features import Featurizer, FeaturizerConfig
        from anomaly_gym.meta.discover import FeedbackGreedyStrategy, PolicyStrategy

        if self.model is not None:
            from anomaly_gym.agents.discover import DiscoverBundle, load_default_discover_bundle

            bundle = load_default_discover_bundle() if self.model == DEFAULT_MODEL else DiscoverBundle.load(self.model)
            config = bundle.featurizer_config
            strategy = PolicyStrategy(bundle, budget=self.budget)
        else:
            config = FeaturizerConfig()
            strategy = FeedbackGreedyStrategy(config, budget=self.budget)
        config = _seeded(config, self.seed)
        features = Featurizer(config).fit(self.X).transform(self.X)
        strategy.start(DiscoveryData(self.X, features, default_prior(features, config)), seed=self.seed)
        return strategy


def _seeded(config, seed: int):
    import dataclasses

    fields = {f.name for f in dataclasses.fields(config)}
    return dataclasses.replace(config, seed=seed) if "seed" in fields else config


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no state file {path}; start a session with --state {path} instead of --resume") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a discovery state file ({exc})") from None
    ok = (
        isinstance(state, dict)
        and state.get("format") == STATE_FORMAT
        and isinstance(state.get("answers"), list)
        and isinstance(state.get("budget"), int)
        and isinstance(state.get("seed"), int)
        and isinstance(state.get("n_rows"), int)
        and isinstance(state.get("data_id"), str)
        and (state.get("model") is None or isinstance(state.get("model"), str))
        and all(isinstance(a, list) and len(a) == 2 and isinstance(a[0], int) and a[1] in (0, 1, None) for a in state["answers"])
    )
    if not ok:
        raise ValueError(f"{path} is not a discovery state file written by anomaly-gym discover")
    return state
