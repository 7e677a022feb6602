"""The training configuration: one typed, documented dataclass, loaded from TOML."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomaly_gym.envs.features import PRESETS, FeaturizerConfig


@dataclass
class TrainConfig:
    """Everything ``anomaly-gym train`` needs; every field can be set in TOML or overridden on the command line."""

    name: str = "default"
    """Config name; the first part of the run folder's name."""
    sources: list[str] = field(default_factory=lambda: ["builtin"])
    """Task sources: 'builtin', folders of ADBench NAME.npz files or of NAME.csv.gz tables with a 'label' column, single .npz/.csv files, or 'planted:SOURCE?...' (anomalies planted into another source's normal rows)."""
    datasets: list[str] = field(default_factory=list)
    """Keep only these task names from the sources (empty: all)."""
    val_tasks: Any = 0.2
    """Tasks held out for validation: a count, a share in (0, 1), or a list of names. Never trained on."""
    algo: str = "ppo"
    """SB3 algorithm: ppo, a2c or dqn."""
    meta: str = "multitask"
    """Meta-learner: 'multitask' (each episode a fresh source task) or 'reptile' (first-order MAML)."""
    total_steps: int = 300_000
    """Environment steps of training in all."""
    n_envs: int = 64
    """Parallel environments of the batched environment."""
    episode_length: int = 64
    """Rows per episode."""
    anomaly_fraction: float = 0.5
    """Probability that a drawn row is an anomaly (balanced by default)."""
    nan_policy: str = "error"
    """NaN or infinite values in source files: 'error' (stop and say where) or 'median' (impute column medians)."""
    max_task_rows: int = 10_000
    """Source tasks above this many rows are subsampled (stratified, seeded) before featurizing."""
    net_arch: list[int] = field(default_factory=list)
    """Hidden layers of the policy network ([] = a linear policy on the features; the value network gets [64])."""
    monotone: bool = True
    """Keep the linear policy non-decreasing in every detector-score feature (needs net_arch = [] and PPO/A2C)."""
    learning_rate: float = 3e-4
    """Optimizer step size."""
    n_steps: int = 32
    """PPO/A2C rollout length per environment between updates."""
    batch_size: int = 512
    """PPO minibatch size."""
    n_epochs: int = 4
    """PPO epochs per update."""
    gamma: float = 0.0
    """Discount. Each row is judged on its own and the next row does not depend on the action, so 0 is exact."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    weight_decay: float = 1e-4
    """L2 weight decay of the policy optimizer (generalisation to unseen datasets)."""
    reptile_inner_steps: int = 2048
    """Reptile: environment steps of inner PPO updates on one task."""
    reptile_meta_lr: float = 0.3
    """Reptile: fraction of the way the meta-parameters move toward the adapted ones."""
    eval_every: int = 25_000
    """Validate (zero-shot AUROC/AUPRC on validation tasks) every this many steps."""
    val_seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds of the benchmark split used for validation."""
    checkpoint_every: int = 50_000
    """Write a resumable checkpoint every this many steps."""
    device: str = "auto"
    """auto, cpu or cuda."""
    seed: int = 0
    """Seed of task sampling, environments and the agent."""
    run_dir: str = "runs"
    """Parent folder of run folders."""
    featurizer: FeaturizerConfig = field(default_factory=lambda: PRESETS["agreeing"])
    """The observation features ([featurizer] table in TOML); default: the 'agreeing' preset (the agreeing half of 18 detectors)."""

    def __post_init__(self) -> None:
        if isinstance(self.featurizer, dict):
            self.featurizer = FeaturizerConfig.from_dict(self.featurizer)
        if isinstance(self.sources, str):
            self.sources = [self.sources]
        if self.algo not in ("ppo", "a2c", "dqn"):
            raise ValueError(f"algo must be ppo, a2c or dqn, got {self.algo!r}")
        if self.meta not in ("multitask", "reptile"):
            raise ValueError(f"meta must be 'multitask' or 'reptile', got {self.meta!r}")
        if self.monotone and (self.net_arch or self.algo == "dqn"):
            raise ValueError("monotone = true needs a linear policy (net_arch = []) and PPO or A2C; set monotone = false otherwise")
        if self.meta == "reptile" and self.algo == "dqn":
            raise ValueError("Reptile needs an on-policy algorithm here: use --algo ppo or a2c")
        for key in (
            "total_steps",
            "n_envs",
            "episode_length",
            "max_task_rows",
            "n_steps",
            "batch_size",
            "n_epochs",
            "eval_every",
            "checkpoint_every",
            "reptile_inner_steps",
        ):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)}")
        if self.nan_policy not in ("error", "median"):
            raise ValueError(f"nan_policy must be 'error' or 'median', got {self.nan_policy!r}")
        if not 0.0 < self.anomaly_fraction < 1.0:
            raise ValueError(f"anomaly_fraction must be in (0, 1), got {self.anomaly_fraction}")

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each field's one-line documentation (the docstring under it in this file)."""
        return _field_docs(cls)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such config file: {path}")
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        data.setdefault("name", path.stem)
        return cls.from_dict({**data, **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
        data = dict(data)
        if isinstance(data.get("featurizer"), dict):
            base = cls().featurizer.to_dict()
            base.update(data["featurizer"])
            data["featurizer"] = FeaturizerConfig.from_dict(base)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["featurizer"] = self.featurizer.to_dict()
        return out

    def to_documented_toml(self) -> str:
        """The config as TOML with each field's documentation above it (how configs/default.toml is written)."""
        import tomli_w
        from anomaly_gym.meta.config import _field_docs

        lines = [
            f"# anomaly-gym training configuration (anomaly-gym train --config configs/{self.name}.toml).",
            "# Every field is documented; command-line flags and --set KEY=VALUE override it.",
            "",
        ]
        data = self.to_dict()
        featurizer = data.pop("featurizer")
        docs = _field_docs(type(self))
        for key, value in data.items():
            lines += [f"# {docs[key]}", tomli_w.dumps({key: value}).strip()]
        lines += ["", "[featurizer]"]
        fdocs = _field_docs(FeaturizerConfig)
        for key, value in featurizer.items():
            lines += [f"# {fdocs[key]}", tomli_w.dumps({key: value}).strip()]
        return "\n".join(lines) + "\n"

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


def _field_docs(cls) -> dict[str, str]:
    """Field name -> the docstring written under the field in ``cls``'s source."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
            docs[node.target.id] = str(nxt.value.value)
    return docs


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """One ``KEY=VALUE`` override (``--set``) -> ``(key, value)``, typed by the field it names.

    ``KEY`` is a field of :class:`TrainConfig`, or ``featurizer.FIELD`` for a field of
    :class:`~anomaly_gym.envs.features.FeaturizerConfig`.  ``VALUE`` is read as the field's
    declared type: booleans as ``true``/``false`` (also ``yes``/``no``, ``1``/``0``, any
    case), numbers as numbers, lists as comma-separated items (``a,b``) or a TOML list
    (``["a", "b"]``), strings as they are.

    Raises:
        ValueError: no ``=``, an unknown key (with the closest known ones), or a value the
            field's type cannot take (with the field's documentation).
    """
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise ValueError(f"--set expects KEY=VALUE, got {text!r}")
    cls, name = (FeaturizerConfig, key.removeprefix("featurizer.")) if key.startswith("featurizer.") else (TrainConfig, key)
    docs = _field_docs(cls)
    if name not in docs:
        import difflib

        known = sorted(docs) if cls is FeaturizerConfig else sorted(docs) + ["featurizer.KEY"]
        close = difflib.get_close_matches(name, list(docs), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"--set {key}: unknown config key.{hint} Known keys: {', '.join(known)}")
    import typing

    kind = typing.get_type_hints(cls)[name]
    try:
        return key, _coerce(_literal(value), value, kind)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--set {key}={value}: {exc}. {key}: {docs[name]}") from None


def _literal(text: str) -> Any:
    """``text`` as a TOML value (``true``, ``3``, ``1e-4``, ``["a", "b"]``, ``"x"``), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _coerce(raw: Any, text: str, kind: Any) -> Any:
    import typing

    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError("expected true or false")
    if kind is int:
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise ValueError("expected a whole number")
    if kind is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        raise ValueError("expected a number")
    if kind is str:
        return raw if isinstance(raw, str) else text
    if origin in (list, tuple):
        items = raw if isinstance(raw, list) else [t.strip() for t in text.split(",") if t.strip()]
        item_kind = args[0] if args else Any
        values = [_coerce(_literal(str(v)) if isinstance(v, str) else v, str(v), item_kind) for v in items]
        return values if origin is list else tuple(values)
    if kind is FeaturizerConfig:
        if isinstance(raw, str) and raw in PRESETS:
            return PRESETS[raw].to_dict()
        raise ValueError(f"expected a preset name ({', '.join(sorted(PRESETS))}) or featurizer.KEY=VALUE overrides")
    # Any (e.g. val_tasks: a count, a share or a list of names)
    if isinstance(raw, str) and "," in raw:
        return [t.strip() for t in raw.split(",") if t.strip()]
    return raw
