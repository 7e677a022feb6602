"""Meta-learning across source tasks: task sampling, multi-task and Reptile meta-training, validation."""

from anomaly_gym.meta.config import TrainConfig
from anomaly_gym.meta.evaluate import ValidationItem, evaluate_iforest, evaluate_policy, prepare_validation
from anomaly_gym.meta.reptile import Reptile, reptile_update
from anomaly_gym.meta.sampler import TaskSampler

__all__ = [
    "Reptile",
    "TaskSampler",
    "TrainConfig",
    "ValidationItem",
    "evaluate_iforest",
    "evaluate_policy",
    "prepare_validation",
    "reptile_update",
]
