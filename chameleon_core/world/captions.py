"""Captions of the world (caption JSON with dynamic and static parts) and a deterministic caption encoder (stub)."""

from __future__ import annotations

import torch

from .catalog import Garment, WorldSample

TEXT_DIM = 64
"""Default feature width: the core's ``tiny`` preset's ``text_dim``."""


def caption(sample: WorldSample, garment: Garment | None = None) -> dict[str, list[str]]:
    """Caption JSON object: ``en_long`` / ``en_short`` (and ``cn_*`` copies), each ``[dynamic, static]``."""
    raise NotImplementedError


def encode_caption(text: str, *, dim: int = TEXT_DIM, max_len: int | None = None, seed: int = 0) -> torch.Tensor:
    """Deterministic features ``[1, L, dim]`` of a text (no learning)."""
    raise NotImplementedError


def save_caption_features(path, text: str, *, dim: int = TEXT_DIM, max_len: int | None = None, seed: int = 0):
    """:func:`encode_caption` written with :func:`chameleon_core.text.save_prompt_embeddings`; returns the path."""
    raise NotImplementedError
