"""Policy bundles: one file with everything needed to score new data.

A bundle is a zip archive of data files (see :mod:`anomaly_gym.agents.serialization`):

- ``bundle.json``: the format marker and version, the algorithm, the policy's
  architecture and hyperparameters, the featurizer configuration, and metadata
  (training tasks, seed, package version, validation metrics, what adaptation did);
- ``policy.safetensors``: the policy network's weights;
- ``featurizer.json`` and ``featurizer.safetensors`` (optional): a featurizer already
  fitted on a target's rows, written by adaptation so the bundle scores that target's new
  rows without refitting (stored as its fitting rows and reference scores);
- ``head.json`` and ``head.ubj`` (optional): a target head written by few-shot
  adaptation (:mod:`anomaly_gym.agents.head`), a boosted correction of the policy's logit
  on that target's columns.

**Security.** Loading a bundle never unpickles: every member is data, checked for type
and size before use, so a bundle from a stranger cannot run code.  Bundles of format 1
and 2 (``model.zip``, ``featurizer.pkl``) held pickles; they are refused, and
:func:`convert_legacy_bundle` (``anomaly-gym bundle convert OLD -o NEW --trust``)
rewrites one you trust in this format.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from anomaly_gym.agents import serialization as ser
from anomaly_gym.agents.head import HeadedScoring, TargetHead
from anomaly_gym.agents.serialization import BundleError
from anomaly_gym.envs.features import Featurizer, FeaturizerConfig

if TYPE_CHECKING:  # torch and stable-baselines3 are imported when a policy is built, not to read a bundle
    from stable_baselines3.common.base_class import BaseAlgorithm

BUNDLE_FORMAT = "anomaly-gym-policy-bundle"
BUNDLE_VERSION = 3
#: The largest bundle file read at all.
MAX_BUNDLE_BYTES = ser.MAX_TOTAL_BYTES


def package_version() -> str:
    try:
        return importlib_metadata.version("anomaly-gym")
    except importlib_metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@dataclass
class PolicyBundle(HeadedScoring):
    """A trained policy and what it needs to turn raw rows into anomaly scores.

    Attributes:
        model: The SB3 model (PPO, A2C or DQN) acting on featurizer outputs.
        featurizer_config: The featurizer the policy was trained with.
        metadata: Free-form record: ``train_tasks``, ``seed``, ``package_version``,
            ``val_metrics``, ``adaptation``, ...
        featurizer: Optionally, a featurizer already fitted on a target's rows.
        head: Optionally, a target head fitted by few-shot adaptation; scoring then needs
            the target's raw columns as well as the features.
    """

    model: BaseAlgorithm
    featurizer_config: FeaturizerConfig
    metadata: dict[str, Any] = field(default_factory=dict)
    featurizer: Featurizer | None = None
    head: TargetHead | None = None

    @property
    def algo(self) -> str:
        from anomaly_gym.agents.factory import ALGORITHMS

        for name, cls in ALGORITHMS.items():
            if isinstance(self.model, cls):
                return name
        raise TypeError(f"unsupported model type {type(self.model).__name__}")

    # -- scoring -----------------------------------------------------------------------
    def policy_margin(self, features: np.ndarray) -> np.ndarray:
        from anomaly_gym.agents.factory import policy_margin

        return policy_margin(self.model, features)

    def fit_featurizer(self, X) -> Featurizer:
        """Fit a featurizer with this bundle's config on ``X`` (unlabelled) and keep it."""
        self.featurizer = Featurizer(self.featurizer_config).fit(X)
        return self.featurizer

    def score(self, X, *, refit: bool = True) -> np.ndarray:
        """Anomaly scores in [0, 1] for the rows of ``X``.

        With ``refit=True`` (default) the featurizer is fitted on ``X`` itself (the rows
        are judged relative to each other, as in batch detection); with ``refit=False``
        the bundle's stored featurizer is used (fitted earlier on the target's rows).
        """
        if refit or self.featurizer is None:
            if not refit:
                raise ValueError("this bundle has no fitted featurizer; call score(X, refit=True) or fit_featurizer first")
            self.fit_featurizer(X)
        return self.anomaly_proba(self.featurizer.transform(X), X)

    # -- persistence -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The bundle's zip archive as bytes (what :meth:`save` writes)."""
        return ser.write_archive(self._members())

    def _members(self, *, with_featurizer: bool = True) -> dict[str, bytes]:
        policy_spec, weights = ser.encode_policy(self.model, self.algo)
        header = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "algo": self.algo,
            "policy": policy_spec,
            "featurizer": self.featurizer_config.to_dict(),
            "metadata": {"package_version": package_version(), **self.metadata},
        }
        members = {"bundle.json": json.dumps(header, indent=2, default=_json_default).encode(), "policy.safetensors": weights}
        if with_featurizer and self.featurizer is not None:
            members["featurizer.json"], members["featurizer.safetensors"] = ser.encode_featurizer(self.featurizer)
        if self.head is not None:
            head_json, members["head.ubj"] = self.head.to_files()
            members["head.json"] = head_json.encode()
        return members

    def save(self, path: str | Path) -> Path:
        """Write the bundle to ``path`` (a single zip file, written atomically); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)
        return path

    @classmethod
    def from_bytes(cls, data: bytes, *, device: str = "auto", origin: str = "data") -> PolicyBundle:
        """Read a bundle from the bytes of its zip archive.

        Nothing is unpickled or executed.  Raises :class:`BundleError` (a ``ValueError``)
        naming the problem for anything that is not a well-formed bundle of this format.
        """
        from anomaly_gym.agents.factory import resolve_device

        parts = read_parts(data, origin)
        model = ser.decode_policy(parts.algo, parts.policy_spec, parts.weights, resolve_device(device), origin)
        return cls(model=model, featurizer_config=parts.config, metadata=parts.metadata, featurizer=read_featurizer(parts), head=read_head(parts))

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto") -> PolicyBundle:
        """Read a bundle written by :meth:`save` (safe on files from anyone: nothing is executed)."""
        return cls.from_bytes(_read_file(path), device=device, origin=str(path))

    def __reduce__(self):
        # Pickling (multiprocessing, joblib) stays inside one trusted program: the policy
        # travels as bundle data, the fitted featurizer as itself (no refit on arrival).
        archive = ser.write_archive(self._members(with_featurizer=False))
        return (_bundle_from_parts, (archive, self.featurizer, str(self.model.device)))


def _read_file(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such policy bundle: {path}")
    size = path.stat().st_size
    if size > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path} is {size:,} bytes, over the {MAX_BUNDLE_BYTES:,}-byte limit of a policy bundle")
    return path.read_bytes()


@dataclass
class BundleParts:
    """A bundle archive's members with its header checked; the policy not yet built."""

    origin: str
    members: dict[str, bytes]
    algo: str
    config: FeaturizerConfig
    metadata: dict[str, Any]
    policy_spec: dict[str, Any]

    @property
    def weights(self) -> bytes:
        return self.members["policy.safetensors"]


def read_parts(data: bytes, origin: str) -> BundleParts:
    """Read a bundle's archive and check its header (format, version, algorithm, featurizer
    config); :class:`BundleError` names what is wrong.  Imports neither torch nor SB3."""
    members = ser.read_archive(data, origin)
    header = ser.parse_json(members["bundle.json"], "bundle.json", origin)
    where = f"{origin}: bundle.json"
    fmt = ser.field(header, "format", str, where, default=None)
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"{origin} is not an anomaly-gym policy bundle (format {fmt!r})")
    version = ser.field(header, "format_version", int, where)
    if version > BUNDLE_VERSION:
        raise BundleError(f"{origin} was written by a newer anomaly-gym (bundle format {version}); upgrade to load it")
    if version < BUNDLE_VERSION:
        raise BundleError(
            f"{origin} is an older policy bundle (format {version}); if you trust where it came from, "
            f"convert it once: anomaly-gym bundle convert {origin} -o NEW.bundle.zip --trust"
        )
    algo = ser.field(header, "algo", str, where, check=lambda a: a in ser.ALGORITHM_NAMES)
    try:
        config = FeaturizerConfig.from_dict(ser.field(header, "featurizer", dict, where))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{where}: invalid featurizer config ({exc})") from None
    metadata = ser.field(header, "metadata", dict, where, default={})
    if "policy.safetensors" not in members:
        raise BundleError(f"{origin} has no policy.safetensors (the policy's weights); it is incomplete")
    return BundleParts(origin, members, algo, config, metadata, ser.field(header, "policy", dict, where))


def read_featurizer(parts: BundleParts) -> Featurizer | None:
    """The fitted featurizer a bundle holds, or None."""
    members, origin = parts.members, parts.origin
    present = {"featurizer.json", "featurizer.safetensors"} & set(members)
    if not present:
        return None
    if len(present) == 1:
        raise BundleError(f"{origin} holds {present.pop()} without its partner; a fitted featurizer needs both files")
    return ser.decode_featurizer(parts.config, members["featurizer.json"], members["featurizer.safetensors"], origin)


def read_head(parts: BundleParts) -> TargetHead | None:
    """The target head a bundle holds, or None."""
    members, origin = parts.members, parts.origin
    present = {"head.json", "head.ubj"} & set(members)
    if not present:
        return None
    if len(present) == 1:
        raise BundleError(f"{origin} holds {present.pop()} without its partner; a target head needs both files")
    where = f"{origin}: head.json"
    header = ser.parse_json(members["head.json"], "head.json", origin)
    ser.field(header, "scale", float, where)
    ser.field(header, "offset", float, where)
    ser.field(header, "n_columns", int, where, check=lambda n: n >= 1)
    ser.field(header, "settings", dict, where, default={})
    ser.field(header, "weight", float, where, default=1.0, check=lambda w: 0.0 <= w <= 1.0)
    try:
        return TargetHead.from_files(members["head.json"].decode(), members["head.ubj"])
    except Exception as exc:  # XGBoost raises its own error type for a malformed model
        raise BundleError(f"{origin}: head.ubj is not a valid XGBoost model ({type(exc).__name__}: {exc})") from None


def _bundle_from_parts(archive: bytes, featurizer: Featurizer | None, device: str) -> PolicyBundle:
    from anomaly_gym.agents.factory import resolve_device

    device = "cuda" if device.startswith("cuda") and resolve_device("auto") == "cuda" else "cpu"
    bundle = PolicyBundle.from_bytes(archive, device=device)
    bundle.featurizer = featurizer
    return bundle


def convert_legacy_bundle(source: str | Path, target: str | Path, *, trust: bool = False, device: str = "cpu") -> tuple[Path, list[str]]:
    """Rewrite an older (format 1 or 2, pickled) bundle in the current, pickle-free format.

    Reading the old file unpickles it, which runs whatever code it holds: pass
    ``trust=True`` only for a file from a source you trust.  Returns the new path and
    notes on what could not be carried over.
    """
    if not trust:
        raise ValueError(f"converting {source} unpickles it, which can run code; pass --trust (trust=True) only if you trust where the file came from")
    from anomaly_gym.agents.factory import ALGORITHMS, resolve_device

    data = _read_file(source)
    origin = str(source)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            ser.check_sizes(zf.infolist(), origin)
            names = set(zf.namelist())
            header = ser.parse_json(zf.read("bundle.json"), "bundle.json", origin) if "bundle.json" in names else None
            if header is None or "model.zip" not in names:
                raise BundleError(f"{origin} is not an older anomaly-gym bundle (no bundle.json or model.zip)")
            algo = ser.field(header, "algo", str, f"{origin}: bundle.json", check=lambda a: a in ALGORITHMS)
            model = ALGORITHMS[algo].load(io.BytesIO(zf.read("model.zip")), device=resolve_device(device))
            featurizer = _legacy_featurizer(zf, names)
            head = TargetHead.from_files(zf.read("head.json").decode(), zf.read("head.ubj")) if "head.json" in names else None
    except zipfile.BadZipFile as exc:
        raise BundleError(f"{origin} is a damaged archive ({exc})") from None
    notes = []
    if featurizer is not None and not hasattr(featurizer, "fit_rows_"):
        notes.append(
            "its fitted featurizer predates stored fitting rows and was left out: detect refits on the data (or adapt the new bundle again to store one)"
        )
        featurizer = None
    bundle = PolicyBundle(model, FeaturizerConfig.from_dict(header["featurizer"]), header.get("metadata", {}), featurizer, head)
    bundle.metadata["converted_from_format"] = header.get("format_version")
    return bundle.save(target), notes


def _legacy_featurizer(zf: zipfile.ZipFile, names: set[str]):
    if "featurizer.pkl" not in names:
        return None
    import pickle

    return pickle.loads(zf.read("featurizer.pkl"))  # the caller passed trust=True


def load_bundle(path: str | Path, *, device: str = "auto") -> PolicyBundle:
    """Shorthand for :meth:`PolicyBundle.load`."""
    return PolicyBundle.load(path, device=device)


#: The policy shipped inside the package, relative to ``anomaly_gym.agents``.
DEFAULT_BUNDLE = ("models", "default.bundle.zip")


def default_bundle_path():
    """``anomaly_gym/agents/models/default.bundle.zip`` as an ``importlib.resources`` Traversable."""
    from importlib import resources

    return resources.files("anomaly_gym.agents").joinpath(*DEFAULT_BUNDLE)


def load_default_bundle(*, device: str = "auto", location=None, scoring_only: bool = False):
    """The policy bundle shipped with the package (or the one at ``location``).

    With ``scoring_only=True`` it is read for scoring
    (:func:`~anomaly_gym.agents.fast_policy.load_scoring_bundle`: no torch).

    Raises:
        FileNotFoundError: the bundle is not installed (for example in a source tree without it).
    """
    from importlib import resources

    location = default_bundle_path() if location is None else location
    if not location.is_file():
        raise FileNotFoundError(
            f"no --model given and the default policy bundle is not installed ({location}); "
            "train one with `anomaly-gym train` and pass --model RUN_DIR/best.bundle.zip"
        )
    with resources.as_file(location) as local:
        if scoring_only:
            from anomaly_gym.agents.fast_policy import load_scoring_bundle

            return load_scoring_bundle(local, device=device)
        return PolicyBundle.load(local, device=device)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in bundle metadata")
