"""References a student makes itself, as a garment switch makes its disentangled reference from the last
generated frame: the training stages' ``self_reference`` options (teacher forcing's ``forcing.self_reference``,
GR-DMD's ``dmd.self_reference``) train on them, so the clip after a switch is a case the student has seen."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from chameleon_core.latents import latent_family, to_raw
from chameleon_core.rescheduling import reference_from_frame

from .dmd import SampleRandom, rollout, rollout_settings
from .latent_cache import Batch, sample_generator
from .parallel import run_inside

STUDENT_STEPS = 4
"""Denoising steps of the rollout that makes a self-made reference (the student's at inference)."""


@lru_cache(maxsize=2)
def _reference_vae(spec: str, device: str):
    from .prepare import make_vae

    vae = make_vae(spec, torch.device(device))
    vae.model.requires_grad_(False)
    return vae


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
