"""Mini subsets (paper Sec. 5: a fraction of the training videos, the whole test set)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def mini_subset(items: Sequence[T], fraction: float, seed: int = 0) -> list[T]:
    """`round(fraction * len(items))` items (at least one), drawn without replacement by
    `seed`, in their original order. The same items and seed always give the same subset."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"mini fraction must be in (0, 1], got {fraction}")
    if not items:
        return []
    count = max(1, round(fraction * len(items)))
    keep = np.random.default_rng(seed).choice(len(items), size=count, replace=False)
    return [items[i] for i in sorted(keep)]
