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
from functools import lru_cache

import torch
from torch import nn

from chameleon_core.latents import latent_family, to_raw
from chameleon_core.rescheduling import reference_from_frame

from .config import TrainConfig
from .dmd import SampleRandom, rollout, rollout_settings
from .flow import draw_index, fed_timestep, noise_level
from .forcing_mask import forcing_forward
from .latent_cache import Batch, sample_generator
from .parallel import run_inside
from .runtime import Run, run_single_model_stage

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


STUDENT_STEPS = 4
"""Denoising steps of the rollout that makes a self-made reference (the student's at inference)."""


@lru_cache(maxsize=2)
def _reference_vae(spec: str, device: str):
    from .prepare import make_vae

    vae = make_vae(spec, torch.device(device))
    vae.model.requires_grad_(False)
    return vae


def self_made_references(model: nn.Module, batch: Batch, step: int, cfg: TrainConfig) -> torch.Tensor:
    """``batch.reference`` with each sample's replaced, with probability ``forcing.self_reference``, by a reference
    the student made itself (:func:`redrawn_references`, with ``forcing.self_reference_vae`` and the forcing chunk).
    The sample then trains to draw its clip from that reference, carrying the student's own errors and another
    garment, as the clip after a switch must. Called only when ``forcing.self_reference`` > 0."""
    f = cfg.forcing
    return redrawn_references(model, batch, step, probability=f.self_reference, vae=f.self_reference_vae,
                              chunk_frames=f.chunk_frames, shift=cfg.flow.shift, seed=cfg.run.seed,
                              setting="forcing.self_reference")


def redrawn_references(model: nn.Module, batch: Batch, step: int, *, probability: float, vae: str | None,
                       chunk_frames: int, shift: float, seed: int, setting: str) -> torch.Tensor:
    """``batch.reference`` with each sample's replaced, with ``probability``, by a reference made as a garment switch
    makes its disentangled reference from the last generated frame (decode it, re-encode it as a one-frame latent):
    without gradient, ``model`` streams the sample's first chunk (``chunk_frames`` latent frames, the student's
    steps) from its reference and the *next* sample's garment (a switch's old garment; one sample alone keeps its
    own), and its first latent frame -- the reference's pose re-drawn -- is decoded and re-encoded with the VAE file
    ``vae``. Draws are a function of ``seed``, the step and the sample's slot. ``setting`` names the option in
    errors (``forcing.self_reference``, ``dmd.self_reference``)."""
    if not vae:
        raise ValueError(f"{setting} > 0 decodes and re-encodes the student's frames, so it needs "
                         f"{setting}_vae: --set {setting}_vae=PATH (the VAE the latent cache was prepared with)")
    picked = [float(torch.rand(1, generator=sample_generator(seed, step, slot, stream=6))) < probability
              for slot in batch.slots]
    codec = _reference_vae(vae, str(batch.reference.device))
    rng = SampleRandom.from_generators([sample_generator(seed, step, slot, stream=7) for slot in batch.slots])
    settings = rollout_settings(chunk_frames, 1, steps=STUDENT_STEPS, shift=shift)
    # Every sample streams, picked or not: under FSDP every process must run the same forwards (a process whose
    # draws picked none would otherwise skip the rollout's collectives and hang the others).
    with torch.no_grad():
        chunk = run_inside(model, rollout, context=batch.context, reference=batch.reference,
                           garment=batch.garment.roll(-1, dims=0), settings=settings, num_chunks=1,
                           exit_step=STUDENT_STEPS - 1, rng=rng, grad=False)
        pixels = codec.decode(to_raw(chunk[:, :, :1]).to(codec.dtype))  # [B, 3, 1, H, W]: the first frame alone
        redrawn = reference_from_frame(codec, latent_family(chunk.shape[1]), pixels[:, :, 0])  # as disentangle does
    keep = torch.tensor(picked, device=batch.reference.device).view(-1, 1, 1, 1, 1)
    return torch.where(keep, redrawn.to(batch.reference.dtype), batch.reference)


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
