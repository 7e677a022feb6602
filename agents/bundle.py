"""Policy bundles: one file with everything needed to score new data.

A bundle is a zip archive holding

- ``bundle.json``: the format marker and version, the algorithm, the featurizer
  configuration, and metadata (training tasks, seed, package version, validation
  metrics, what adaptation did);
- ``model.zip``: the stable-baselines3 model (policy weights and hyperparameters);
- ``featurizer.pkl`` (optional): a featurizer already fitted on a target's rows, written
  by adaptation so the bundle scores that target's new rows without refitting;
- ``head.json`` and ``head.ubj`` (optional, format version 2): a target head written by
  few-shot adaptation (:mod:`anomaly_gym.agents.head`), a boosted correction of the
  policy's logit on that target's columns.

**Security.** Loading a bundle unpickles objects (SB3 stores parts of the model with
cloudpickle, and ``featurizer.pkl`` is a pickle), which can execute arbitrary code.
Load bundles only from sources you trust, exactly as with ``torch.load`` or
``pickle.load``.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit
from stable_baselines3.common.base_class import BaseAlgorithm

from anomaly_gym.agents.factory import ALGORITHMS, policy_margin, resolve_device
from anomaly_gym.agents.head import TargetHead
from anomaly_gym.envs.features import Featurizer, FeaturizerConfig

BUNDLE_FORMAT = "anomaly-gym-policy-bundle"
BUNDLE_VERSION = 2
#: Bundles without a target head are written as version 1, which older readers load.
_VERSION_WITHOUT_HEAD = 1


def package_version() -> str:
    try:
        return importlib_metadata.version("anomaly-gym")
    except importlib_metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


@dataclass
class PolicyBundle:
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
        for name, cls in ALGORITHMS.items():
            if isinstance(self.model, cls):
                return name
        raise TypeError(f"unsupported model type {type(self.model).__name__}")

    # -- scoring -----------------------------------------------------------------------
    def margin(self, features: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        """The adapted policy's logit of "anomaly" for featurized rows (``X``: their raw columns, needed with a head)."""
        margin = policy_margin(self.model, features)
        if self.head is None:
            return margin
        if X is None:
            raise ValueError("this bundle has a target head, which reads the target's raw columns: pass X as well as the features")
        return self.head.margin(X, features, margin)

    def anomaly_proba(self, features: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        """P(anomaly) for rows already featurized with this bundle's featurizer config.

        ``X`` (the same rows' raw columns) is needed when the bundle has a target head.
        """
        return expit(self.margin(features, X))

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
        model_bytes = io.BytesIO()
        self.model.save(model_bytes)
        header = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION if self.head is not None else _VERSION_WITHOUT_HEAD,
            "algo": self.algo,
            "featurizer": self.featurizer_config.to_dict(),
            "metadata": {"package_version": package_version(), **self.metadata},
        }
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("bundle.json", json.dumps(header, indent=2, default=_json_default))
            zf.writestr("model.zip", model_bytes.getvalue())
            if self.featurizer is not None:
                zf.writestr("featurizer.pkl", pickle.dumps(self.featurizer, protocol=pickle.HIGHEST_PROTOCOL))
            if self.head is not None:
                head_json, head_trees = self.head.to_files()
                zf.writestr("head.json", head_json)
                zf.writestr("head.ubj", head_trees)
        return archive.getvalue()

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
        """Read a bundle from the bytes of its zip archive.  Only load bundles from trusted sources."""
        buffer = io.BytesIO(data)
        if not zipfile.is_zipfile(buffer):
            raise ValueError(f"{origin} is not an anomaly-gym policy bundle (not a zip archive)")
        with zipfile.ZipFile(buffer) as zf:
            names = set(zf.namelist())
            if "bundle.json" not in names:
                hint = " It looks like a bare stable-baselines3 model; wrap it with PolicyBundle(model, config).save()." if "policy.pth" in names else ""
                raise ValueError(f"{origin} is not an anomaly-gym policy bundle (no bundle.json).{hint}")
            header = json.loads(zf.read("bundle.json"))
            if header.get("format") != BUNDLE_FORMAT:
                raise ValueError(f"{origin} is not an anomaly-gym policy bundle (format {header.get('format')!r})")
            if header.get("format_version", 0) > BUNDLE_VERSION:
                raise ValueError(
                    f"{origin} was written by a newer anomaly-gym (bundle format {header['format_version']}); upgrade to load it"
                )
            algo = header["algo"]
            if algo not in ALGORITHMS:
                raise ValueError(f"{origin}: unknown algorithm {algo!r} in bundle")
            model = ALGORITHMS[algo].load(io.BytesIO(zf.read("model.zip")), device=resolve_device(device))
            featurizer = pickle.loads(zf.read("featurizer.pkl")) if "featurizer.pkl" in names else None
            head = None
            if "head.json" in names:
                head = TargetHead.from_files(zf.read("head.json").decode(), zf.read("head.ubj"))
        return cls(
            model=model,
            featurizer_config=FeaturizerConfig.from_dict(header["featurizer"]),
            metadata=header.get("metadata", {}),
            featurizer=featurizer,
            head=head,
        )

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto") -> PolicyBundle:
        """Read a bundle written by :meth:`save`.  Only load bundles from trusted sources."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such policy bundle: {path}")
        return cls.from_bytes(path.read_bytes(), device=device, origin=str(path))

    def __reduce__(self):
        # SB3 models do not pickle directly (loggers, environments); their zip format does.
        return (_bundle_from_bytes, (self.to_bytes(), str(self.model.device)))


def _bundle_from_bytes(data: bytes, device: str) -> PolicyBundle:
    return PolicyBundle.from_bytes(data, device="cuda" if device.startswith("cuda") and resolve_device("auto") == "cuda" else "cpu")


def load_bundle(path: str | Path, *, device: str = "auto") -> PolicyBundle:
    """Shorthand for :meth:`PolicyBundle.load`."""
    return PolicyBundle.load(path, device=device)


#: The policy shipped inside the package, relative to ``anomaly_gym.agents``.
DEFAULT_BUNDLE = ("models", "default.bundle.zip")


def default_bundle_path():
    """``anomaly_gym/agents/models/default.bundle.zip`` as an ``importlib.resources`` Traversable."""
    from importlib import resources

    return resources.files("anomaly_gym.agents").joinpath(*DEFAULT_BUNDLE)


def load_default_bundle(*, device: str = "auto", location=None) -> PolicyBundle:
    """The policy bundle shipped with the package (or the one at ``location``).

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
