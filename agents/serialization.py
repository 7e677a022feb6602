"""Reading and writing the parts of a policy bundle without pickle.

A bundle (format version 3) is a zip archive of data files only:

==========================  ==========================================================
``bundle.json``             format marker and version, algorithm, policy spec
                            (observation bounds, network and optimizer settings,
                            hyperparameters), featurizer config, metadata
``policy.safetensors``      the policy network's ``state_dict`` (safetensors)
``featurizer.json`` and     optional: a featurizer fitted on a target's rows, as its
``featurizer.safetensors``  fitting rows and reference arrays (refitted on load), and
                            in ``featurizer.json`` the target's column encoder
                            (:class:`~anomaly_gym.envs.encoding.TableEncoder`: its
                            numeric and categorical columns, medians, value counts)
``head.json``, ``head.ubj`` optional: a target head (JSON + XGBoost's own format)
==========================  ==========================================================

Nothing in a bundle is executed: JSON fields are checked for type before use, classes
are named from a fixed list (:data:`ALLOWED_CLASSES`), and tensors are raw numbers.
Before a byte is decompressed the archive itself is checked: only the names above, at
most :data:`MAX_MEMBER_BYTES` per member and :data:`MAX_TOTAL_BYTES` in all, and no
member over 1 MiB that claims to compress better than :data:`MAX_RATIO` : 1 (a zip
bomb).  Every problem raises :class:`BundleError`, which says what was wrong.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

MEMBERS = ("bundle.json", "policy.safetensors", "featurizer.json", "featurizer.safetensors", "head.json", "head.ubj")
#: Members of format versions 1 and 2, which held pickled objects.
LEGACY_MEMBERS = ("model.zip", "featurizer.pkl", "policy.pth")
MAX_MEMBER_BYTES = 256 * 2**20
MAX_TOTAL_BYTES = 512 * 2**20
MAX_RATIO = 100.0
#: The algorithms a bundle may hold (``anomaly_gym.agents.ALGORITHMS`` maps them to SB3 classes).
ALGORITHM_NAMES = ("ppo", "a2c", "dqn")
_RATIO_FLOOR = 2**20

#: Classes a bundle may name in its policy settings, by the name it stores.
ALLOWED_CLASSES = {
    "torch.optim.Adam": ("torch.optim", "Adam"),
    "torch.optim.AdamW": ("torch.optim", "AdamW"),
    "torch.optim.RMSprop": ("torch.optim", "RMSprop"),
    "torch.optim.SGD": ("torch.optim", "SGD"),
    "stable_baselines3.common.sb2_compat.rmsprop_tf_like.RMSpropTFLike": ("stable_baselines3.common.sb2_compat.rmsprop_tf_like", "RMSpropTFLike"),
    "torch.nn.Tanh": ("torch.nn", "Tanh"),
    "torch.nn.ReLU": ("torch.nn", "ReLU"),
    "torch.nn.ELU": ("torch.nn", "ELU"),
    "torch.nn.LeakyReLU": ("torch.nn", "LeakyReLU"),
    "torch.nn.GELU": ("torch.nn", "GELU"),
    "torch.nn.SiLU": ("torch.nn", "SiLU"),
}

#: Hyperparameters kept per algorithm (what fine-tuning an adapted policy reuses).
HYPERPARAMETERS = {
    "ppo": (
        "learning_rate",
        "n_steps",
        "batch_size",
        "n_epochs",
        "gamma",
        "gae_lambda",
        "clip_range",
        "clip_range_vf",
        "normalize_advantage",
        "ent_coef",
        "vf_coef",
        "max_grad_norm",
        "target_kl",
        "seed",
    ),
    "a2c": ("learning_rate", "n_steps", "gamma", "gae_lambda", "ent_coef", "vf_coef", "max_grad_norm", "normalize_advantage", "seed"),
    "dqn": (
        "learning_rate",
        "buffer_size",
        "learning_starts",
        "batch_size",
        "tau",
        "gamma",
        "train_freq",
        "gradient_steps",
        "target_update_interval",
        "exploration_fraction",
        "exploration_initial_eps",
        "exploration_final_eps",
        "max_grad_norm",
        "seed",
    ),
}


class BundleError(ValueError):
    """A file that is not a valid, safe policy bundle; the message says what is wrong."""


# --------------------------------------------------------------------------- archive


def read_archive(data: bytes, origin: str) -> dict[str, bytes]:
    """The members of a bundle archive, checked before anything is decompressed."""
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        raise BundleError(f"{origin} is not an anomaly-gym policy bundle (not a zip archive)")
    try:
        with zipfile.ZipFile(buffer) as zf:
            infos = zf.infolist()
            _check_members(infos, origin)
            return {info.filename: _read_member(zf, info, origin) for info in infos}
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise BundleError(f"{origin} is a damaged archive ({exc}); download or copy it again") from None


def _check_members(infos: list[zipfile.ZipInfo], origin: str) -> None:
    names = [info.filename for info in infos]
    if "bundle.json" not in names:
        hint = (
            " It looks like a bare stable-baselines3 model; wrap it with PolicyBundle(model, config).save()."
            if "policy.pth" in names and "data" in names
            else ""
        )
        raise BundleError(f"{origin} is not an anomaly-gym policy bundle (no bundle.json).{hint}")
    legacy = sorted(set(names) & set(LEGACY_MEMBERS))
    if legacy:
        raise BundleError(
            f"{origin} is an older policy bundle (format 1 or 2) whose {', '.join(legacy)} holds pickled Python objects, "
            "which can run code when loaded, so anomaly-gym does not load it. If you trust where it came from, convert "
            f"it once: anomaly-gym bundle convert {origin} -o NEW.bundle.zip --trust"
        )
    unknown = sorted(set(names) - set(MEMBERS))
    if unknown:
        raise BundleError(f"{origin} holds unexpected member(s) {unknown}; a bundle holds only {list(MEMBERS)}")
    if len(set(names)) != len(names):
        raise BundleError(f"{origin} holds the same member twice; rewrite it with PolicyBundle.save")
    check_sizes(infos, origin)


def check_sizes(infos: list[zipfile.ZipInfo], origin: str) -> None:
    """Refuse members that would unpack too large, or that compress like a zip bomb."""
    total = 0
    for info in infos:
        if info.file_size > MAX_MEMBER_BYTES:
            raise BundleError(
                f"{origin}: member {info.filename} would unpack to {info.file_size:,} bytes, over the {MAX_MEMBER_BYTES:,}-byte limit; refusing to read it"
            )
        if info.file_size > _RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise BundleError(
                f"{origin}: member {info.filename} claims to compress {info.file_size / max(info.compress_size, 1):,.0f}:1 "
                f"(limit {MAX_RATIO:.0f}:1), as a zip bomb does; refusing to read it"
            )
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise BundleError(f"{origin} would unpack to {total:,} bytes, over the {MAX_TOTAL_BYTES:,}-byte limit; refusing to read it")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, origin: str) -> bytes:
    with zf.open(info) as member:  # stops at the declared size and checks the CRC at its end
        data = member.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise BundleError(f"{origin}: member {info.filename} does not match its declared size")
    return data


def write_archive(members: dict[str, bytes]) -> bytes:
    """A bundle archive of ``members`` (JSON deflated, binary arrays stored as they are)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            method = zipfile.ZIP_DEFLATED if name.endswith(".json") else zipfile.ZIP_STORED
            zf.writestr(name, data, compress_type=method)
    return archive.getvalue()


def parse_json(data: bytes, name: str, origin: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{origin}: {name} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise BundleError(f"{origin}: {name} must hold a JSON object, not a {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- typed fields


def field(obj: dict, key: str, kind, where: str, *, default=..., check=None):
    """``obj[key]`` if it has type ``kind`` (and passes ``check``), else a :class:`BundleError`."""
    if key not in obj:
        if default is ...:
            raise BundleError(f"{where}: missing field {key!r}")
        return default
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds) or (float in kinds and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise BundleError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}")
    if check is not None and not check(value):
        raise BundleError(f"{where}: field {key!r} has an invalid value {value!r}")
    return value


def _plain(value, where: str):
    """Check that ``value`` is plain JSON data (numbers, strings, booleans, null, lists, objects)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, where) for k, v in value.items()}
    raise BundleError(f"{where}: unexpected value of type {type(value).__name__}")


# --------------------------------------------------------------------------- policy


def encode_policy(model, algo: str) -> tuple[dict[str, Any], bytes]:
    """The JSON spec and safetensors bytes of an SB3 model's policy."""
    from safetensors.torch import save

    space = model.observation_space
    spec = {
        "observation_low": np.asarray(space.low, dtype=np.float64).tolist(),
        "observation_high": np.asarray(space.high, dtype=np.float64).tolist(),
        "n_actions": int(model.action_space.n),
        "policy_kwargs": _encode_value(dict(model.policy_kwargs), "policy_kwargs"),
        "hyperparameters": {name: _hyperparameter(model, name) for name in HYPERPARAMETERS[algo] if hasattr(model, name)},
        "num_timesteps": int(model.num_timesteps),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.policy.state_dict().items()}
    return spec, save(state)


def _hyperparameter(model, name: str):
    value = getattr(model, name)
    if name == "train_freq":
        return [int(value.frequency), str(value.unit.value)]
    if callable(value):  # an SB3 schedule: keep its starting value
        value = value(1.0)
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise TypeError(f"cannot store hyperparameter {name}={value!r} in a bundle")
    return value


def _encode_value(value, where: str):
    if isinstance(value, type):
        for stored, cls in _allowed_classes().items():
            if value is cls:
                return {"class": stored}
        raise TypeError(f"{where}: class {value.__module__}.{value.__qualname__} cannot be stored in a bundle (allowed: {sorted(ALLOWED_CLASSES)})")
    if isinstance(value, dict):
        return {str(k): _encode_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_value(v, where) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: a {type(value).__name__} cannot be stored in a bundle")


def _allowed_classes() -> dict[str, type]:
    import importlib

    return {stored: getattr(importlib.import_module(module), attr) for stored, (module, attr) in ALLOWED_CLASSES.items()}


def _decode_value(value, where: str):
    if isinstance(value, dict):
        if set(value) == {"class"}:
            name = value["class"]
            if name not in ALLOWED_CLASSES:
                raise BundleError(f"{where}: class {name!r} is not one a bundle may name (allowed: {sorted(ALLOWED_CLASSES)})")
            return _allowed_classes()[name]
        return {k: _decode_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_value(v, where) for v in value]
    return value


@dataclass
class PolicySpec:
    """A bundle's ``policy`` spec, checked: what rebuilding or evaluating the policy needs."""

    low: np.ndarray
    high: np.ndarray
    n_actions: int
    policy_kwargs: dict
    hyperparameters: dict

    @property
    def n_inputs(self) -> int:
        return len(self.low)


def check_policy_spec(algo: str, spec: dict, where: str) -> PolicySpec:
    """Check a bundle's ``policy`` spec without importing torch; classes stay as stored names."""
    low = np.asarray(field(spec, "observation_low", list, where), dtype=object)
    high = np.asarray(field(spec, "observation_high", list, where), dtype=object)
    if low.ndim != 1 or low.shape != high.shape or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (*low, *high)):
        raise BundleError(f"{where}: observation_low/high must be equal-length lists of numbers")
    n_actions = field(spec, "n_actions", int, where, check=lambda n: n == 2)
    policy_kwargs = _plain(field(spec, "policy_kwargs", dict, where), where)
    _check_classes(policy_kwargs, f"{where}.policy_kwargs")
    hyper = _plain(field(spec, "hyperparameters", dict, where), where)
    unknown = set(hyper) - set(HYPERPARAMETERS[algo])
    if unknown:
        raise BundleError(f"{where}: unknown hyperparameter(s) {sorted(unknown)} for {algo}")
    if "train_freq" in hyper:
        hyper["train_freq"] = tuple(hyper["train_freq"])
    return PolicySpec(low.astype(np.float32), high.astype(np.float32), n_actions, policy_kwargs, hyper)


def _check_classes(value, where: str) -> None:
    """Refuse a class name a bundle may not name (see :data:`ALLOWED_CLASSES`)."""
    if isinstance(value, dict):
        if set(value) == {"class"} and value["class"] not in ALLOWED_CLASSES:
            raise BundleError(f"{where}: class {value['class']!r} is not one a bundle may name (allowed: {sorted(ALLOWED_CLASSES)})")
        for k, v in value.items():
            _check_classes(v, f"{where}.{k}")
    elif isinstance(value, list):
        for v in value:
            _check_classes(v, where)


def decode_policy(algo: str, spec: dict, tensors: bytes, device: str, origin: str):
    """Rebuild the SB3 model described by ``spec`` and load ``tensors`` into its policy."""
    from anomaly_gym.agents.factory import ALGORITHMS

    where = f"{origin}: bundle.json policy"
    checked = check_policy_spec(algo, spec, where)
    policy_kwargs = _decode_value(checked.policy_kwargs, f"{where}.policy_kwargs")
    hyper = checked.hyperparameters
    model = build_model(
        lambda: ALGORITHMS[algo]("MlpPolicy", env=None, device=device, _init_setup_model=False, policy_kwargs=policy_kwargs, **hyper),
        checked.low,
        checked.high,
        checked.n_actions,
        f"{where}: cannot build a {algo} policy from these settings",
    )
    model.num_timesteps = field(spec, "num_timesteps", int, where, default=0)
    load_policy_state(model, tensors, origin)
    return model


def build_model(make, low: np.ndarray, high: np.ndarray, n_actions: int, failure: str):
    """Build an SB3 model with ``make()`` (``_init_setup_model=False``) for a Box observation and ``n_actions`` actions.

    ``failure`` opens the :class:`BundleError` raised when the stored settings do not make a model.
    """
    from gymnasium import spaces

    try:
        model = make()
        model.observation_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        model.action_space = spaces.Discrete(n_actions)
        model.n_envs = 1
        model._setup_model()
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise BundleError(f"{failure} ({exc})") from None
    return model


def load_policy_state(model, tensors: bytes, origin: str) -> None:
    """Load ``policy.safetensors`` into ``model.policy``, refusing tensors that do not fit it."""
    import torch

    state = load_tensors(tensors, "policy.safetensors", origin, torch_tensors=True)
    expected = model.policy.state_dict()
    if set(state) != set(expected) or any(tuple(state[k].shape) != tuple(expected[k].shape) for k in expected):
        raise BundleError(f"{origin}: policy.safetensors does not fit the policy described in bundle.json (tensors {sorted(state)} vs {sorted(expected)})")
    with torch.no_grad():
        model.policy.load_state_dict({k: v.to(dtype=expected[k].dtype) for k, v in state.items()})


def load_tensors(data: bytes, name: str, origin: str, *, torch_tensors: bool = False) -> dict:
    try:
        if torch_tensors:
            from safetensors.torch import load
        else:
            from safetensors.numpy import load
        return load(data)
    except Exception as exc:  # safetensors raises its own error type for every malformed file
        raise BundleError(f"{origin}: {name} is not a valid safetensors file ({exc})") from None


# --------------------------------------------------------------------------- featurizer


FEATURIZER_ARRAYS = ("fit_rows", "sorted_scores")


def encode_featurizer(featurizer) -> tuple[bytes, bytes]:
    """A fitted featurizer as JSON plus arrays: its fitting rows and its reference scores."""
    from safetensors.numpy import save

    header = {"n_rows_seen": int(featurizer.n_rows_seen_), "n_columns": int(featurizer.n_columns_)}
    encoder = getattr(featurizer, "encoder_", None)
    if encoder is not None:  # the target's column schema and encoding: new rows are encoded the same way
        header["encoder"] = encoder.to_dict()
    arrays = {
        "fit_rows": np.ascontiguousarray(featurizer.fit_rows_, dtype=np.float64),
        "sorted_scores": np.ascontiguousarray(featurizer.sorted_scores_, dtype=np.float64),
    }
    return json.dumps(header).encode(), save(arrays)


def decode_featurizer(config, header_bytes: bytes, arrays_bytes: bytes, origin: str):
    """Refit the featurizer on its stored rows (seeded, so it is the same fit) and check it."""
    from anomaly_gym.envs.features import Featurizer

    where = f"{origin}: featurizer.json"
    header = parse_json(header_bytes, "featurizer.json", origin)
    n_columns = field(header, "n_columns", int, where, check=lambda n: n >= 1)
    n_rows_seen = field(header, "n_rows_seen", int, where, check=lambda n: n >= 10)
    unknown = set(header) - {"n_columns", "n_rows_seen", "encoder"}
    if unknown:
        raise BundleError(f"{where}: unknown field(s) {sorted(unknown)}")
    encoder = None
    if "encoder" in header:
        from anomaly_gym.envs.encoding import TableEncoder

        try:
            encoder = TableEncoder.from_dict(_plain(header["encoder"], f"{where} encoder"), f"{where} encoder")
        except ValueError as exc:
            raise BundleError(str(exc)) from None
        if encoder.n_outputs != n_columns:
            raise BundleError(f"{where}: the encoder gives {encoder.n_outputs} columns but the featurizer has {n_columns}")
    arrays = load_tensors(arrays_bytes, "featurizer.safetensors", origin)
    if set(arrays) != set(FEATURIZER_ARRAYS):
        raise BundleError(f"{origin}: featurizer.safetensors must hold {list(FEATURIZER_ARRAYS)}, got {sorted(arrays)}")
    rows, ref = arrays["fit_rows"], arrays["sorted_scores"]
    if rows.ndim != 2 or rows.shape[1] != n_columns or not 10 <= len(rows) <= min(n_rows_seen, config.max_fit_rows):
        raise BundleError(f"{origin}: the featurizer's fitting rows have shape {rows.shape}, which does not match featurizer.json")
    if rows.dtype != np.float64 or not np.isfinite(rows).all():
        raise BundleError(f"{origin}: the featurizer's fitting rows must be finite float64 values")
    featurizer = Featurizer(config)._fit_rows(rows, n_rows_seen)
    featurizer.encoder_ = encoder
    if ref.shape != featurizer.sorted_scores_.shape or not np.allclose(ref, featurizer.sorted_scores_, rtol=1e-6, atol=1e-9):
        warnings.warn(
            f"{origin}: the featurizer refitted from the bundle's rows gives other reference scores than when it was "
            "saved (different library versions?); scores may differ slightly from the adapted ones",
            RuntimeWarning,
            stacklevel=3,
        )
    return featurizer
