"""``anomaly-gym train`` end to end, in a subprocess, on a tiny budget."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from anomaly_gym.agents import load_bundle
from anomaly_gym.envs import builtin_suite, featurize_task
from anomaly_gym.meta.config import TrainConfig

DATASETS = "['synthetic/global-00','synthetic/local-00','synthetic/dependency-00','synthetic/clustered-00','sklearn/iris-1','sklearn/wine-0']"
TINY = [
    "--sources",
    "builtin",
    "--total-steps",
    "1024",
    "--device",
    "cpu",
    "--no-progress",
    "--set",
    f"datasets={DATASETS}",
    "--set",
    "val_tasks=2",
    "--set",
    "n_envs=16",
    "--set",
    "n_steps=32",
    "--set",
    "batch_size=256",
    "--set",
    "eval_every=512",
    "--set",
    "checkpoint_every=512",
    "--set",
    "featurizer.detectors=['iforest','ecod','hbos']",
]


def _train(tmp_path, *extra):
    env = {**os.environ, "ANOMALY_GYM_CACHE": os.environ["ANOMALY_GYM_CACHE"]}
    cmd = [sys.executable, "-m", "anomaly_gym.scripts.cli", "train", *TINY, "--run-dir", str(tmp_path / "runs"), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _scalar_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return set(acc.Tags()["scalars"]), set(acc.Tags().get("tensors", []))


def test_tiny_training_run_logs_tags_and_writes_a_reloadable_bundle(tmp_path):
    proc = _train(tmp_path)
    (run,) = list((tmp_path / "runs").iterdir())
    assert run.name.startswith("default__0__")
    scalars, tensors = _scalar_tags(run)
    assert {"meta/val_auroc", "meta/val_auprc", "rollout/ep_rew_mean", "time/steps_per_s"} <= scalars
    assert any(t.startswith("meta/val_auroc/") for t in scalars)
    assert any(t.startswith("meta/train_reward/") for t in scalars)
    assert any("config" in t for t in tensors)  # the config, logged as text
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["total_steps"] == 1024 and config["featurizer"]["detectors"] == ["iforest", "ecod", "hbos"]
    assert "zero-shot validation AUROC" in proc.stdout

    bundle = load_bundle(run / "best.bundle.zip", device="cpu")
    final = load_bundle(run / "final.bundle.zip", device="cpu")
    assert len(bundle.metadata["train_tasks"]) == 4 and len(bundle.metadata["val_tasks"]) == 2
    assert set(bundle.metadata["train_tasks"]).isdisjoint(bundle.metadata["val_tasks"])
    assert 0.0 <= final.metadata["val_auroc"] <= 1.0
    # the reloaded bundle acts exactly as the saved checkpoint does
    from stable_baselines3 import PPO

    task = next(t for t in builtin_suite() if t.name == bundle.metadata["val_tasks"][0])
    obs = featurize_task(task, final.featurizer_config)[:64]
    ckpt = PPO.load(run / "checkpoints" / "last.zip", device="cpu")
    np.testing.assert_array_equal(final.model.predict(obs, deterministic=True)[0], ckpt.predict(obs, deterministic=True)[0])
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["num_timesteps"] >= 1024


def test_resume_continues_to_the_new_total(tmp_path):
    _train(tmp_path)
    (run,) = list((tmp_path / "runs").iterdir())
    _train(tmp_path, "--resume", str(run), "--total-steps", "2048")
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["num_timesteps"] >= 2048
    assert load_bundle(run / "final.bundle.zip").metadata["num_timesteps"] >= 2048


def test_reptile_meta_learner_runs(tmp_path):
    _train(tmp_path, "--meta", "reptile", "--set", "reptile_inner_steps=512")
    (run,) = list((tmp_path / "runs").iterdir())
    assert load_bundle(run / "final.bundle.zip").metadata["meta_learner"] == "reptile"


def test_config_file_and_bad_overrides():
    cfg = TrainConfig.from_toml(Path(__file__).resolve().parents[2] / "configs" / "default.toml")
    assert cfg == TrainConfig(name="default")  # the shipped file is exactly the documented defaults
    assert set(TrainConfig.field_help()) == {f for f in cfg.to_dict()}  # every field documented
    with pytest.raises(ValueError, match="unknown config key"):
        TrainConfig.from_dict({"totl_steps": 5})
    with pytest.raises(ValueError, match="meta must be"):
        TrainConfig(meta="maml")
    proc = subprocess.run([sys.executable, "-m", "anomaly_gym.scripts.cli", "train", "--set", "n_envs=0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "n_envs must be a positive integer" in proc.stderr


def test_rich_and_agreeing_all_configs_are_the_default_with_one_documented_change():
    from anomaly_gym.envs.features import PRESETS

    configs = Path(__file__).resolve().parents[2] / "configs"
    rich, default = TrainConfig.from_toml(configs / "rich.toml"), TrainConfig.from_toml(configs / "default.toml")
    assert rich == TrainConfig(name="rich", featurizer=PRESETS["rich"])
    assert default.featurizer == PRESETS["agreeing"] and default.featurizer.detectors == rich.featurizer.detectors
    everything, detect = TrainConfig.from_toml(configs / "agreeing-all.toml"), TrainConfig.from_toml(configs / "detect-default.toml")
    assert everything == TrainConfig(name="agreeing-all", sources=detect.sources, nan_policy=detect.nan_policy)  # default's recipe, detect's sources


def _progress_steps(run: Path) -> list[int]:
    """``time/total_timesteps`` of every row SB3's CSV logger wrote in ``run`` (by the latest process)."""
    import csv

    path = run / "progress.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [int(float(r["time/total_timesteps"])) for r in csv.DictReader(fh) if r.get("time/total_timesteps")]


# In the slow run: once, on a fresh clone, the interrupted process had not exited 120 s after
# SIGINT (passes in ~25 s otherwise). Until that hang is found, it must not fail the default run.
@pytest.mark.slow
def test_ctrl_c_checkpoints_and_resume_continues_the_step_count(tmp_path):
    """SIGINT mid-run: exit 130 and a checkpoint at the step reached; --resume continues from there."""
    import signal
    import time

    env = {**os.environ, "ANOMALY_GYM_CACHE": os.environ["ANOMALY_GYM_CACHE"]}
    runs = tmp_path / "runs"
    long_run = [*TINY, "--set", "checkpoint_every=100000000", "--total-steps", "100000000"]
    cmd = [sys.executable, "-m", "anomaly_gym.scripts.cli", "train", *long_run, "--run-dir", str(runs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(runs.glob("*/progress.csv"))
            if found and _progress_steps(found[0].parent):
                break  # training is under way: at least one update logged
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err
    (run,) = list(runs.iterdir())
    interrupted_at = json.loads((run / "checkpoints" / "state.json").read_text())["num_timesteps"]
    assert 0 < interrupted_at < 100_000_000
    assert interrupted_at >= max(_progress_steps(run))  # the checkpoint holds the last step reached, not an older one

    _train(tmp_path, "--resume", str(run), "--total-steps", str(interrupted_at + 1024))
    resumed = _progress_steps(run)  # the resumed process's own log
    assert resumed and min(resumed) > interrupted_at  # it started where the interrupted run stopped, not from 0
    final = json.loads((run / "checkpoints" / "state.json").read_text())["num_timesteps"]
    assert final >= interrupted_at + 1024


def test_show_config_prints_toml_and_typed_overrides():
    proc = subprocess.run(
        [sys.executable, "-m", "anomaly_gym.scripts.cli", "train", "--set", "monotone=false", "--set", "net_arch=16,16", "--show-config"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    config = tomllib.loads(proc.stdout)  # the printed config is valid TOML, with its documentation as comments
    assert config["monotone"] is False and config["net_arch"] == [16, 16]
    assert "# Keep the linear policy non-decreasing" in proc.stdout


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a CUDA device")
def test_a_run_that_cannot_start_leaves_no_run_folder(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "anomaly_gym.scripts.cli", "train", *TINY, "--device", "cuda", "--run-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_executor_flags_are_checked_before_anything_runs(tmp_path, capsys):
    from anomaly_gym.scripts.cli import main

    base = ["train", *TINY, "--run-dir", str(tmp_path / "runs")]
    assert main(base + ["--executor", "local", "--address", "auto"]) == 2
    assert "--address is for --executor ray" in capsys.readouterr().err
    assert main(base + ["--executor", "serial", "--workers", "2"]) == 2
    assert "the serial executor runs one item at a time" in capsys.readouterr().err
    assert main(base + ["--workers", "0"]) == 2
    assert "--workers must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
