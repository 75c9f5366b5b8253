"""Flow-matching training pieces shared by SFT and teacher forcing (FashionChameleon's ``utils/scheduler.py`` rules).

- Timesteps: an index ``i`` uniform in 0..999, ``sigma = 1 - i / 1000``, shifted: ``t = 1000 * 5 sigma / (1 + 4
  sigma)``; the noise level is the *shifted* ``sigma' = t / 1000``: ``x_t = (1 - sigma') x0 + sigma' eps``, target
  ``eps - x0``.
- Loss weight ``w(t)``: ``exp(-2 ((t - 500) / 1000)^2)`` over the 1000-entry table, minus its minimum, rescaled so
  the table sums to 1000 (``w(1000) = 0``).
- The DiT is fed ``model_timestep(t, compute dtype)`` -- the authors' ``.to(dtype).long()`` quantization that
  inference uses, so training and sampling see the same integer timesteps; ``sigma'`` stays exact.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from chameleon_core.schedules import (
    NUM_TRAIN_TIMESTEPS,
    model_timestep,
    shifted_timestep_table,
)


@lru_cache(maxsize=8)
def timestep_table(shift: float) -> torch.Tensor:
    """``t_i`` for i in 0..999 (float64, 1000 down to ~5 at shift 5)."""
    return shifted_timestep_table(shift)


@lru_cache(maxsize=8)
def loss_weight_table(shift: float) -> torch.Tensor:
    """``w(t_i)``: the Gaussian bump, minimum subtracted, summing to 1000 (float64)."""
    t = timestep_table(shift)
    w = torch.exp(-2.0 * ((t - 500.0) / 1000.0) ** 2)
    w = w - w.min()
    return w * (NUM_TRAIN_TIMESTEPS / w.sum())


def draw_index(gen: torch.Generator) -> int:
    return int(torch.randint(0, NUM_TRAIN_TIMESTEPS, (1,), generator=gen))


def noise_level(index: int, shift: float) -> tuple[float, float, float]:
    """``(t, sigma', w)`` for table index ``index``."""
    t = float(timestep_table(shift)[index])
    return t, t / NUM_TRAIN_TIMESTEPS, float(loss_weight_table(shift)[index])


def fed_timestep(t: float, dtype: torch.dtype, quantize: bool) -> float:
    """The timestep value the DiT receives for exact ``t``."""
    return float(model_timestep(t, dtype)) if quantize else t
