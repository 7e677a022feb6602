"""Anomaly-detection tasks as Gymnasium environments.

Importing this package registers ``AnomalyGym/Detect-v0``, ``AnomalyGym/Stream-v0`` and
``AnomalyGym/Discover-v1``.  ``BatchedDetectEnv`` (a
stable-baselines3 VecEnv) is imported on first use, so that importing the package does
not import stable-baselines3 and torch.
"""

from anomaly_gym.envs.detect import AnomalyDetectionEnv
from anomaly_gym.envs.discover import DiscoverEnv
from anomaly_gym.envs.features import Featurizer, FeaturizerConfig, featurize_split, featurize_task
from anomaly_gym.envs.series import Series, load_nab_dir, make_synthetic_series, synthetic_suite
from anomaly_gym.envs.sources import builtin_suite, load_adbench_dir, load_csv, load_npz, load_tasks, make_synthetic_task
from anomaly_gym.envs.tasks import Split, Task, benchmark_split, check_training_task, make_task, subsample
from gymnasium.envs.registration import register, registry

ENV_ID = "AnomalyGym/Detect-v0"
STREAM_ENV_ID = "AnomalyGym/Stream-v0"
DISCOVER_ENV_ID = "AnomalyGym/Discover-v1"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="anomaly_gym.envs.detect:AnomalyDetectionEnv")
if STREAM_ENV_ID not in registry:
    register(id=STREAM_ENV_ID, entry_point="anomaly_gym.envs.stream_env:StreamDetectionEnv")
if DISCOVER_ENV_ID not in registry:
    register(id=DISCOVER_ENV_ID, entry_point="anomaly_gym.envs.discover:DiscoverEnv")


def __getattr__(name: str):
    if name == "BatchedDetectEnv":
        from anomaly_gym.envs.vector import BatchedDetectEnv

        return BatchedDetectEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENV_ID",
    "STREAM_ENV_ID",
    "DISCOVER_ENV_ID",
    "DiscoverEnv",
    "Series",
    "load_nab_dir",
    "make_synthetic_series",
    "synthetic_suite",
    "AnomalyDetectionEnv",
    "BatchedDetectEnv",
    "Featurizer",
    "FeaturizerConfig",
    "Split",
    "Task",
    "benchmark_split",
    "builtin_suite",
    "check_training_task",
    "featurize_split",
    "featurize_task",
    "load_adbench_dir",
    "load_csv",
    "load_npz",
    "load_tasks",
    "make_synthetic_task",
    "make_task",
    "subsample",
]
