"""Helpers for the torch-based detectors: device choice and seeded, side-effect-free training."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


def seed_int(random_state) -> int:
    """An ``int`` seed from ``random_state`` (int, ``None`` for a fresh one, or a ``RandomState``)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0] % (2**31 - 1))
    if isinstance(random_state, (int, np.integer)):
        if random_state < 0:
            raise ValueError(f"random_state must be a non-negative int or None, got {random_state}")
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    raise TypeError(f"random_state must be an int, None or a numpy RandomState, got {type(random_state).__name__}")


def resolve_device(device: str):
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` -> ``torch.device``."""
    import torch

    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but no CUDA device is available; use device='auto' or 'cpu'")
        return torch.device(device)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global generators for a block, then restore them.

    Library code inside the block (PyOD's deep detectors, libsvm, DataLoader shuffling,
    dropout) draws from the global generators; restoring them afterwards keeps a ``fit``
    from changing the caller's random streams.  torch is seeded only when it is already
    imported (code that needs it imports it before entering the block), so detectors
    without torch do not pay for importing it.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    hash_seed = os.environ.get("PYTHONHASHSEED")
    torch = sys.modules.get("torch")
    try:
        with contextlib.ExitStack() as stack:
            if torch is not None:
                devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
                stack.enter_context(torch.random.fork_rng(devices=devices))
                torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        if hash_seed is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = hash_seed
