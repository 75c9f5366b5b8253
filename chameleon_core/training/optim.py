"""AdamW, the linear warm-up scheduler and gradient clipping across shards."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .config import OptimSection


def build_optimizer(
    params: Iterable[torch.nn.Parameter], section: OptimSection, *, lr: float | None = None
) -> torch.optim.AdamW:
    """AdamW with the section's betas, weight decay and eps; ``lr`` overrides the section's (e.g. the critic's).

    Works on FSDP2's sharded (DTensor) parameters: each process keeps the state of its shard only.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters for the optimiser; check that the model has requires_grad set")
    return torch.optim.AdamW(
        params,
        lr=section.lr if lr is None else lr,
        betas=tuple(section.betas),
        weight_decay=section.weight_decay,
        eps=section.eps,
        foreach=False,  # keeps per-parameter arithmetic identical whatever the sharding (rank-count equality)
    )


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from lr/warmup to lr over ``warmup_steps`` steps, then constant."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")

    def factor(step: int) -> float:
        return 1.0 if warmup_steps == 0 else min(1.0, (step + 1) / warmup_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm (over every shard of every process) to ``max_norm``; returns the norm before."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"), foreach=False)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)
