"""AdamW, the learning-rate schedule (linear warm-up, then constant or decaying) and gradient clipping across shards."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .config import DECAYS, OptimSection


def build_optimizer(
    params: Iterable[torch.nn.Parameter], section: OptimSection, *, lr: float | None = None
) -> torch.optim.AdamW:
    """AdamW with the section's betas, weight decay and eps; ``lr`` overrides the section's (e.g. the critic's).

    Works on FSDP2's sharded (DTensor) parameters: each process keeps the state of its shard only.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters for the optimiser; check that the model has requires_grad set")
    # Sharded (FSDP2 DTensor) parameters: the per-parameter loop, whose arithmetic is identical whatever the sharding
    # (rank-count equality). Plain tensors (one process without FSDP): PyTorch's fused kernel, the same update in one
    # pass per tensor (on the 2-core CPU the loop took 9.8 ms of a 68 ms step of the world DiT, the fused kernel 2.3).
    sharded = any(hasattr(p, "full_tensor") for p in params)
    return torch.optim.AdamW(
        params,
        lr=section.lr if lr is None else lr,
        betas=tuple(section.betas),
        weight_decay=section.weight_decay,
        eps=section.eps,
        foreach=False,
        fused=None if sharded else True,
    )


def lr_factor(step: int, warmup_steps: int, *, decay: str = "constant", total_steps: int | None = None,
              min_ratio: float = 0.0) -> float:
    """The learning-rate multiplier after ``step`` optimiser steps: linear warm-up over ``warmup_steps``, then
    ``constant`` (1), or ``cosine`` / ``linear`` from 1 down to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    done = min(1.0, (step - warmup_steps) / span)
    shape = 0.5 * (1 + math.cos(math.pi * done)) if decay == "cosine" else 1 - done
    return min_ratio + (1 - min_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, *, decay: str = "constant",
                    total_steps: int | None = None, min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from lr/warmup to lr over ``warmup_steps`` steps, then :func:`lr_factor`'s ``decay``."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if decay not in DECAYS:
        raise ValueError(f"optim.decay must be one of {', '.join(DECAYS)}, got {decay!r}")
    if decay != "constant" and (total_steps is None or total_steps <= warmup_steps):
        raise ValueError(f"a {decay} decay needs the stage's total steps above the warm-up ({warmup_steps}), got "
                         f"{total_steps}; raise run.steps or lower optim.warmup_steps")
    if not 0 <= min_ratio <= 1:
        raise ValueError(f"optim.min_lr_ratio must be in 0..1, got {min_ratio}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup_steps, decay=decay, total_steps=total_steps, min_ratio=min_ratio))


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm (over every shard of every process) to ``max_norm``; returns the norm before."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"), foreach=False)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)
