"""Cutting a turn longer than the model's audio limit into clips the model accepts."""

from __future__ import annotations

import numpy as np


def split_clip(samples: np.ndarray, max_n_samples: int) -> list[np.ndarray]:
    """Every piece is max_n_samples long except the last.

    Longest-first also sidesteps mlx-vlm 0.7.10's multi-clip bug, where a shorter clip before a
    longer one gets wrong embeddings.
    """
    if max_n_samples <= 0:
        raise ValueError(f"max_n_samples must be positive, got {max_n_samples!r}")
    return [samples[i : i + max_n_samples] for i in range(0, len(samples), max_n_samples)]
