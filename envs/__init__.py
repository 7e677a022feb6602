"""Anomaly-detection tasks as Gymnasium environments.

Importing this package registers ``AnomalyGym/Detect-v0``.
"""

from gymnasium.envs.registration import register, registry

from anomaly_gym.envs.detect import AnomalyDetectionEnv
from anomaly_gym.envs.features import Featurizer, FeaturizerConfig, featurize_task
from anomaly_gym.envs.sources import builtin_suite, load_adbench_dir, load_csv, load_npz, load_tasks, make_synthetic_task
from anomaly_gym.envs.tasks import Split, Task, benchmark_split, check_training_task, make_task, subsample

ENV_ID = "AnomalyGym/Detect-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="anomaly_gym.envs.detect:AnomalyDetectionEnv")

__all__ = [
    "ENV_ID",
    "AnomalyDetectionEnv",
    "Featurizer",
    "FeaturizerConfig",
    "Split",
    "Task",
    "benchmark_split",
    "builtin_suite",
    "check_training_task",
    "featurize_task",
    "load_adbench_dir",
    "load_csv",
    "load_npz",
    "load_tasks",
    "make_synthetic_task",
    "make_task",
    "subsample",
]
