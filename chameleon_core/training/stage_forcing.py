"""Stage 2: in-context teacher forcing (the authors' ``models/teacher_forcing_ic.py`` rules).

One forward over ``[clean 2 + F | noisy 2 + F]`` under the teacher-forcing mask (:mod:`.forcing_mask`), both halves
at RoPE frames 0..F+1 (with ``forcing.position_offset_max``, the chunks after the first a random whole number of
chunks later). Noise levels are drawn independently per chunk of ``forcing.chunk_frames`` latent frames
(constant within a chunk) with the SFT table and shift; with ``forcing.self_reference`` some samples' references
are the student's own re-drawn frames (:func:`self_made_references`); the loss is ``w(t) * MSE`` of the flow on the
noisy video frames only, averaged over frames and samples. Initialised from the SFT teacher; AdamW (``optim.decay``: constant,
as the authors', or annealed). The result is exported as ``<run>/export/student.safetensors`` (kind ``student``): it already streams causally.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .config import TrainConfig
from .flow import draw_index, fed_timestep, noise_level
from .forcing_mask import forcing_forward
from .latent_cache import Batch, sample_generator
from .parallel import run_inside
from .runtime import Run, run_single_model_stage
from .self_reference import redrawn_references

logger = logging.getLogger(__name__)


def chunk_noise_levels(gen: torch.Generator, frames: int, chunk: int, shift: float) -> list[tuple[float, float, float]]:
    """``(t, sigma, w)`` per latent frame: one draw per chunk, repeated over its frames."""
    if frames % chunk:
        raise ValueError(f"{frames} latent frames are not a multiple of forcing.chunk_frames={chunk}")
    levels = []
    for _ in range(frames // chunk):
        levels += [noise_level(draw_index(gen), shift)] * chunk
    return levels


def position_offset(cfg: TrainConfig, step: int) -> int:
    """This step's RoPE offset of the video frames (``forcing.position_offset_max``): a whole number of chunks,
    drawn from the run's seed and the step only, so every process of a step uses the same one."""
    chunk, most = cfg.forcing.chunk_frames, cfg.forcing.position_offset_max
    if most < chunk:
        return 0
    gen = sample_generator(cfg.run.seed, step, 0, stream=5)
    return chunk * int(torch.randint(0, most // chunk + 1, (1,), generator=gen))


def self_made_references(model: nn.Module, batch: Batch, step: int, cfg: TrainConfig) -> torch.Tensor:
    """``batch.reference`` with each sample's replaced, with probability ``forcing.self_reference``, by a reference
    the student made itself (:func:`redrawn_references`, with ``forcing.self_reference_vae`` and the forcing chunk).
    The sample then trains to draw its clip from that reference, carrying the student's own errors and another
    garment, as the clip after a switch must. Called only when ``forcing.self_reference`` > 0."""
    f = cfg.forcing
    return redrawn_references(model, batch, step, probability=f.self_reference, vae=f.self_reference_vae,
                              chunk_frames=f.chunk_frames, shift=cfg.flow.shift, seed=cfg.run.seed,
                              setting="forcing.self_reference")


def forcing_loss(model: nn.Module, batch: Batch, step: int, cfg: TrainConfig, compute_dtype: torch.dtype):
    x0 = batch.video  # [B, C, F, h, w]
    reference = self_made_references(model, batch, step, cfg) if cfg.forcing.self_reference > 0 else batch.reference
    b, _, f = x0.shape[:3]
    dev = x0.device
    noise, sigma, t_fed, weight = [], [], [], []
    for slot in batch.slots:
        gen = sample_generator(cfg.run.seed, step, slot, stream=3)
        levels = chunk_noise_levels(gen, f, cfg.forcing.chunk_frames, cfg.flow.shift)
        noise.append(torch.randn(x0.shape[1:], generator=gen))
        sigma.append([s for _, s, _ in levels])
        t_fed.append([fed_timestep(t, compute_dtype, cfg.flow.quantize_timestep) for t, _, _ in levels])
        weight.append([w for _, _, w in levels])
    offset = position_offset(cfg, step)
    eps = torch.stack(noise).to(dev)
    sig = torch.tensor(sigma, device=dev).view(b, 1, f, 1, 1)
    noisy = (1 - sig) * x0 + sig * eps
    pred = run_inside(model, forcing_forward, x0, noisy, reference, batch.garment,
                      torch.tensor(t_fed, device=dev), batch.context, cfg.forcing.chunk_frames,
                      cfg.forcing.attention, offset)  # [B, C, F, h, w]
    per_frame = (pred.float() - (eps - x0)).pow(2).mean(dim=(1, 3, 4))  # [B, F]
    loss = (torch.tensor(weight, device=dev) * per_frame).mean()
    return loss, {"mse": float(per_frame.mean().detach())}


def run_forcing(cfg: TrainConfig, run: Run | None = None) -> int:
    """Train the stage and export the student; returns the last step. With ``run`` given (the benchmark), the caller
    closes it."""
    return run_single_model_stage(cfg, run, forcing_loss, kind="student")
