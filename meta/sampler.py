"""Source tasks with a dataset-level train / validation split."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from anomaly_gym.envs.tasks import Task, check_training_task


class TaskSampler:
    """Splits source tasks by dataset into training and validation tasks.

    Validation tasks are never handed out for training: :meth:`sample` draws from
    :attr:`train_tasks` only, so validation AUROC measures transfer to unseen datasets.
    Derived tasks (planted anomalies, :mod:`anomaly_gym.envs.planted`) go with their
    parent dataset: when a dataset is held out, so is every task made from it, and
    validation scores the original datasets only (the derived ones when a held-out group
    has no original).  The one-vs-rest tasks of one multi-class dataset (``Task.family``:
    ``sklearn/digits-0`` .. ``-9``) share its rows and are held out together; naming one of
    them in ``val_tasks`` holds out all.

    Args:
        tasks: Labelled source tasks (each with both classes).
        val_tasks: How many datasets to hold out (an int), a share of them (a float in
            (0, 1)), or their names (a sequence of str).
        seed: Seed of the hold-out choice (when not given by name).
    """

    def __init__(self, tasks: Sequence[Task], *, val_tasks: int | float | Sequence[str] = 0.2, seed: int = 0) -> None:
        tasks = list(tasks)
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"source task names must be unique; repeated: {dup}")
        for t in tasks:
            check_training_task(t)
        groups = list(dict.fromkeys(t.dataset for t in tasks))
        if isinstance(val_tasks, str):
            val_tasks = [val_tasks]
        if isinstance(val_tasks, (list, tuple)):
            missing = sorted(set(val_tasks) - set(names))
            if missing:
                raise ValueError(f"validation task(s) {missing} are not among the sources {names}")
            by_name = {t.name: t.dataset for t in tasks}
            held = {by_name[v] for v in val_tasks}
        else:
            n_val = int(round(val_tasks * len(groups))) if isinstance(val_tasks, float) else int(val_tasks)
            if isinstance(val_tasks, float) and not 0.0 <= val_tasks < 1.0:
                raise ValueError(f"a validation share must be in [0, 1), got {val_tasks}")
            if not 0 <= n_val < len(groups):
                raise ValueError(f"cannot hold out {n_val} of {len(groups)} datasets; at least one must remain for training")
            order = np.random.default_rng(seed).permutation(len(groups))
            held = {groups[i] for i in order[:n_val]}
        self.train_tasks = [t for t in tasks if t.dataset not in held]
        originals = {t.dataset for t in tasks if t.parent is None}
        self.val_tasks = [t for t in tasks if t.dataset in held and (t.parent is None or t.dataset not in originals)]
        if not self.train_tasks:
            raise ValueError("every task was held out for validation; leave at least one for training")

    def sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        """``n`` training tasks (without replacement while possible)."""
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        picks = rng.choice(len(self.train_tasks), size=n, replace=n > len(self.train_tasks))
        return [self.train_tasks[int(i)] for i in picks]

    def __repr__(self) -> str:
        return f"TaskSampler(train={len(self.train_tasks)}, val={len(self.val_tasks)})"
