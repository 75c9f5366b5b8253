"""The tiny transformer the unit tests run on: seeded random weights, fp32, on the CPU
(:func:`chameleon_core.random_models.random_transformer` at the ``tiny`` preset unless a config is given)."""

from __future__ import annotations

from chameleon_core.config import WanConfig
from chameleon_core.model import WanModel
from chameleon_core.random_models import random_transformer


def tiny_transformer(seed: int = 0, config: WanConfig | None = None) -> WanModel:
    """A seeded random WanModel (``tiny`` preset by default), fp32 on the CPU."""
    return random_transformer(config, seed=seed)
