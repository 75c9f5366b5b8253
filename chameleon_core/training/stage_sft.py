"""Stage 1: in-context teacher SFT (the authors' ``models/diffusion_ic.py`` / ``trainer/sft_ic.py`` rules).

Flow matching on the video frames only, one noise level per sample (:mod:`.flow`): ``x_t = (1 - sigma) x0 + sigma
eps``, target ``eps - x0``, loss ``w(t) * MSE`` over the video frames, averaged over the batch. The reference and
garment latents ride in front at t = 0 through ``WanModel.forward(..., reference=, garment=)``. Full fine-tune
with AdamW and warm-up, per-block activation checkpointing, FSDP2 (:mod:`.runtime`). The final teacher is
exported as ``<run>/export/teacher.safetensors``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .config import TrainConfig
from .flow import draw_index, fed_timestep, noise_level
from .latent_cache import Batch, sample_generator
from .runtime import Run, run_single_model_stage

logger = logging.getLogger(__name__)


def sft_loss(model: nn.Module, batch: Batch, step: int, cfg: TrainConfig, compute_dtype: torch.dtype):
    """Mean over the micro-batch of ``w(t_i) * mean((v_pred - (eps - x0))^2)`` on the video frames."""
    x0 = batch.video  # [B, C, T, h, w]
    noise, sigma, t_fed, weight = [], [], [], []
    for slot in batch.slots:
        gen = sample_generator(cfg.run.seed, step, slot, stream=2)
        t, s, w = noise_level(draw_index(gen), cfg.flow.shift)
        noise.append(torch.randn(x0.shape[1:], generator=gen))
        sigma.append(s)
        t_fed.append(fed_timestep(t, compute_dtype, cfg.flow.quantize_timestep))
        weight.append(w)
    dev = x0.device
    eps = torch.stack(noise).to(dev)
    sig = torch.tensor(sigma, device=dev).view(-1, 1, 1, 1, 1)
    x_t = (1 - sig) * x0 + sig * eps
    pred = model(x_t, torch.tensor(t_fed, device=dev), batch.context, reference=batch.reference,
                 garment=batch.garment)  # [B, C, T, h, w] fp32
    per_sample = (pred.float() - (eps - x0)).pow(2).mean(dim=(1, 2, 3, 4))  # [B]
    loss = (torch.tensor(weight, device=dev) * per_sample).mean()
    return loss, {"mse": float(per_sample.mean().detach())}


def run_sft(cfg: TrainConfig, run: Run | None = None) -> int:
    """Train the stage and export the teacher; returns the last step. With ``run`` given (the benchmark), the caller
    closes it."""
    return run_single_model_stage(cfg, run, sft_loss, kind="teacher")
