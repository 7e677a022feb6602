"""``detect`` with a bundle scores without importing torch or the training stack.

A new Python process runs ``anomaly-gym detect`` in batch and in stream mode on a tiny
CSV and reports which heavy modules it imported (a deterministic check of what start-up
pays for; ``anomaly-gym bench detect-startup`` measures the time and memory).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from anomaly_gym.agents.bundle import default_bundle_path

#: Modules scoring with a bundle must not import: torch and the training stack.
TRAINING_STACK = ("torch", "stable_baselines3", "sb3_contrib", "tensorboard", "xgboost", "lightgbm", "matplotlib")
#: Nor PyOD and numba: the detector bank is PyOD's formulas on scikit-learn (anomaly_gym.envs.bank).
PYOD = ("pyod", "numba", "llvmlite")
#: Nor pandas, which scikit-learn imports only to keep a reference to (anomaly_gym.envs.bank.import_estimators).
PANDAS = ("pandas", "pyarrow")

PROBE = """
import json, sys
from anomaly_gym.scripts.cli import main
codes = [main(["detect", sys.argv[1], "-o", sys.argv[2]]),
         main(["detect", sys.argv[1], "-o", sys.argv[3], "--mode", "stream", "--warmup", "20", "--window", "40",
               "--refit-every", "10", "--refit", "inline"])]
print(json.dumps({"codes": codes, "modules": [m for m in json.loads(sys.argv[4]) if m in sys.modules]}))
"""


@pytest.mark.skipif(not default_bundle_path().is_file(), reason="the default policy bundle is not installed")
def test_detect_with_a_bundle_imports_neither_torch_nor_the_training_stack_nor_pyod(tmp_path):
    X = np.random.default_rng(0).normal(size=(60, 4)).round(4)
    X[5] += 9.0
    data = tmp_path / "in.csv"
    data.write_text("a,b,c,d\n" + "\n".join(",".join(map(str, x)) for x in X) + "\n")
    batch, stream = tmp_path / "batch.csv", tmp_path / "stream.csv"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(data), str(batch), str(stream), json.dumps(TRAINING_STACK + PYOD + PANDAS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0, 0], proc.stderr
    assert report["modules"] == [], f"detect imported {report['modules']}"
    scores = np.array([float(line.split(",")[4]) for line in batch.read_text().splitlines()[1:]])
    assert len(scores) == 60 and scores.argmax() == 5  # the planted row scores highest
    statuses = [line.split(",")[6] for line in stream.read_text().splitlines()[1:]]
    assert statuses.count("warmup") == 20 and statuses.count("ok") == 40


def test_importing_the_scoring_path_imports_no_torch():
    code = (
        "import sys; import anomaly_gym.scripts.detect, anomaly_gym.agents.fast_policy, anomaly_gym.detectors.stream, "
        "anomaly_gym.envs.csvio; print(' '.join(m for m in %r if m in sys.modules))" % (TRAINING_STACK + ("sklearn", "pyod"),)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == []  # not even PyOD or scikit-learn before a detector is fitted
