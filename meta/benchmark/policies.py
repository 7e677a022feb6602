"""The policy bundles of the benchmark: one given bundle, the shipped one, or one trained per fold."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from anomaly_gym.meta.benchmark.protocol import check_not_trained_on, fold_sources


def error_text(exc: BaseException) -> str:
    """One line for the ``error`` column: the exception's type and message (a leak's message alone)."""
    from anomaly_gym.meta.benchmark.protocol import LeakError

    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, LeakError) else str(exc)
    return " ".join(text.split())


class PolicySource:
    """Which policy bundle scores which target, and the guards that keep targets out of training.

    Modes: ``"model"`` (one given bundle), ``"train"`` (one bundle per fold, trained from a
    config and cached in ``OUT/models``), ``"default"`` (the bundle shipped with the package).
    """

    def __init__(self, mode: str, *, out: Path, model: Path | None = None, config: Path | None = None,
                 source_specs: Sequence[str] = (), sources: Sequence = (), targets: Sequence = (),
                 folds: dict[str, str] | None = None, progress: Callable[[str], None] | None = None,
                 device: str = "cpu") -> None:
        self.mode = mode
        self.device = device
        self.out = Path(out)
        self.model = model
        self.config = config
        self.source_specs = list(source_specs)
        self.sources = list(sources)
        self.targets = list(targets)
        self.folds = folds or {}
        self.progress = progress or (lambda text: None)
        self._bundles: dict[str, Any] = {}

    def fold_of(self, target: str) -> str:
        return self.folds.get(target, "all") if self.mode == "train" else self.mode

    def bundle_path(self, fold: str) -> Path:
        if self.mode == "model":
            return self.model
        if self.mode == "default":
            from anomaly_gym.agents.bundle import default_bundle_path

            return default_bundle_path()
        return self.out / "models" / (f"fold-{fold}.bundle.zip" if fold != "all" else "all-sources.bundle.zip")

    def bundle_for(self, target: str):
        """The bundle that scores ``target``; raises :class:`LeakError` if the target was trained on."""
        fold = self.fold_of(target)
        if fold not in self._bundles:
            self._bundles[fold] = self._train(fold) if self.mode == "train" else self._load(fold)
        bundle = self._bundles[fold]
        check_not_trained_on(bundle, target)
        return bundle

    def _load(self, fold: str):
        from anomaly_gym.agents import load_bundle

        path = self.bundle_path(fold)
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"no policy bundle at {path}; pass --model BUNDLE or --train-config CONFIG, or leave 'policy' out of --methods"
            )
        return load_bundle(path, device=self.device)

    def _train(self, fold: str):
        """Train (or load the cached) policy of ``fold`` on the sources minus the fold's targets."""
        from anomaly_gym.agents import load_bundle
        from anomaly_gym.meta.config import TrainConfig
        from anomaly_gym.meta.training import MetaTrainer

        train_sources = fold_sources(self.sources, self.targets, self.folds, fold)
        held_out = sorted(t.name for t in self.targets if self.folds.get(t.name) == fold) if fold != "all" else []
        if not train_sources:
            raise ValueError(f"fold {fold} leaves no source dataset to train on; use more sources or more folds")
        base = TrainConfig.from_toml(self.config)
        data = base.to_dict()
        names = [s.name for s in train_sources]
        data.update(sources=self.source_specs, datasets=names, device=self.device)
        if isinstance(base.val_tasks, (list, tuple, str)):
            wanted = [base.val_tasks] if isinstance(base.val_tasks, str) else list(base.val_tasks)
            kept = [v for v in wanted if v in names]
            data["val_tasks"] = kept if kept else 0.2
        cfg = TrainConfig.from_dict(data)
        path = self.bundle_path(fold)
        record_path = path.with_name(path.name.replace(".bundle.zip", ".json"))
        record = {"fold": fold, "held_out": held_out, "sources": names, "config": cfg.to_dict()}
        if path.is_file():
            old = json.loads(record_path.read_text()) if record_path.is_file() else None
            if old != json.loads(json.dumps(record)):
                raise ValueError(
                    f"{path} was trained for another setup (sources, held-out datasets or config differ); "
                    "use another --out, or delete it to train again"
                )
            bundle = load_bundle(path, device=self.device)
        else:
            run_path = self.out / "models" / path.name.replace(".bundle.zip", "")
            resume = (run_path / "checkpoints" / "last.zip").is_file() and record_path.is_file() and \
                json.loads(record_path.read_text()) == json.loads(json.dumps(record))
            record_path.parent.mkdir(parents=True, exist_ok=True)
            record_path.write_text(json.dumps(record, indent=2))
            self.progress(f"training the policy of fold {fold} on {len(names)} sources ({cfg.total_steps:,} steps)")
            trainer = MetaTrainer(cfg, run_path, resume=resume)
            trainer.log_setup()
            trainer.train(progress=False)
            bundle = load_bundle(run_path / "best.bundle.zip", device=self.device)
            bundle.save(path)
        for name in held_out:
            check_not_trained_on(bundle, name)  # a bug if it ever fires: the fold's targets were held out
        return bundle



    def resolve(self, target: str) -> tuple[str | None, str | None]:
        """(path of the bundle that scores ``target``, None), or (None, why there is none) for an error row."""
        try:
            self.bundle_for(target)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # no policy for this target is an error row, not the end of the run
            return None, error_text(exc)
        return str(self.bundle_path(self.fold_of(target))), None
