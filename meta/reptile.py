"""First-order meta-learning (Reptile; Nichol et al., 2018) over SB3 policies.

The functional core is :func:`reptile_update`; :class:`Reptile` is the thin object around
an SB3 agent: :meth:`Reptile.clone` snapshots the meta-parameters, :meth:`Reptile.adapt`
runs inner RL updates on one task, and :meth:`Reptile.step` moves the meta-parameters
``meta_lr`` of the way toward the adapted ones.
"""

from __future__ import annotations

from typing import Callable

import torch
from stable_baselines3.common.base_class import BaseAlgorithm

Params = dict[str, torch.Tensor]


def reptile_update(meta: Params, adapted: Params, meta_lr: float) -> Params:
    """``meta + meta_lr * (adapted - meta)`` for every floating-point tensor (others are kept)."""
    if not 0.0 < meta_lr <= 1.0:
        raise ValueError(f"meta_lr must be in (0, 1], got {meta_lr}")
    if meta.keys() != adapted.keys():
        raise ValueError("meta and adapted parameters have different keys")
    out = {}
    for key, m in meta.items():
        a = adapted[key]
        out[key] = m + meta_lr * (a.to(m.device) - m) if torch.is_floating_point(m) else m.clone()
    return out


class Reptile:
    """Reptile around an SB3 agent whose environment can be pointed at one task.

    Args:
        agent: The SB3 model holding the meta-parameters.
        meta_lr: Outer step size, the fraction of the way toward the adapted parameters.
    """

    def __init__(self, agent: BaseAlgorithm, meta_lr: float = 0.5) -> None:
        if not 0.0 < meta_lr <= 1.0:
            raise ValueError(f"meta_lr must be in (0, 1], got {meta_lr}")
        self.agent = agent
        self.meta_lr = meta_lr

    def clone(self) -> Params:
        """A detached copy of the current (meta-)parameters of the policy."""
        return {k: v.detach().clone() for k, v in self.agent.policy.state_dict().items()}

    def load(self, params: Params) -> None:
        self.agent.policy.load_state_dict(params)

    def adapt(self, set_task: Callable[[], None], inner_steps: int, callback=None) -> Params:
        """Point the environment at one task (``set_task()``), run ``inner_steps`` RL steps, return the adapted parameters.

        The agent's parameters are left at the adapted values; :meth:`step` restores and moves them.
        """
        set_task()
        self.agent.learn(inner_steps, reset_num_timesteps=False, callback=callback, progress_bar=False)
        return self.clone()

    def step(self, meta: Params, adapted: Params) -> Params:
        """Apply the Reptile update from ``meta`` toward ``adapted``; load and return the new meta-parameters."""
        new = reptile_update(meta, adapted, self.meta_lr)
        self.load(new)
        return new
