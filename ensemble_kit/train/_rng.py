"""The global RNGs third-party training code draws from, seeded and restored around our use of them."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

__all__ = ["global_rng_state", "isolated_global_rngs", "set_global_rng_state"]


def global_rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def isolated_global_rngs(seed: int) -> Iterator[None]:
    """Seed torch's, numpy's and Python's global RNGs for one fold, and restore them afterwards.

    timm's Mixup draws from numpy's global RNG and torch's model init and dropout from torch's;
    seeding them makes a fold reproducible (and its checkpoints resumable to identical logits),
    restoring them keeps training from changing the random state of the caller.
    """
    saved = global_rng_state()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        set_global_rng_state(saved)
