"""The chunk step: few-step denoising of one chunk and its clean pass, shared by inference and training.

One chunk of the causal student, top to bottom (the authors' ``stream_wan22_ic_inference.py`` and Self-Forcing's
training rollout run the same steps):

1. start from noise at the first timestep;
2. for each step: predict the flow, take x0, re-noise x0 with fresh noise to the next timestep;
3. the chunk's output is the x0 of the *exit step* (the last step at inference; a random step shared by all chunks
   in the DMD rollout, where it is the only step run with gradient);
4. the clean pass: the output runs once more at t = 0, without gradient, and its keys/values overwrite the chunk's
   cache slots, so later chunks read clean keys and no gradient ever crosses chunks.

:func:`streaming.generate <chameleon_core.streaming.generate>` calls it with no gradient and the last exit step;
the distillation rollout calls it with ``grad=True`` and a drawn exit step. Nothing else runs a chunk.

Timesteps: σ (for x0 and re-noising) stays exact, while the DiT sees the timestep quantized as the authors feed it
(:func:`~chameleon_core.schedules.model_timestep`).
"""

from __future__ import annotations

from typing import Callable

import torch

from .cache import KVCache
from .causal import chunk_forward
from .model import TextContext, WanModel
from .schedules import NUM_TRAIN_TIMESTEPS, add_noise, model_timestep, x0_from_velocity

NoiseFn = Callable[[int], torch.Tensor]
"""``noise(step)`` -> fresh noise ``[B, C, F, h, w]`` for step ``step`` (0: the start; i > 0: re-noising to step i)."""


def denoise_chunk(
    model: WanModel,
    cache: KVCache,
    text: TextContext,
    slots: list[int],
    timesteps: tuple[float, ...] | list[float],
    noise: NoiseFn,
    *,
    exit_step: int | None = None,
    grad: bool = False,
    clean_pass: bool = True,
) -> torch.Tensor:
    """Denoise one chunk in the claimed cache ``slots``; returns its clean latents ``[B, C, F, h, w]`` (fp32).

    timesteps: the warped few-step list, e.g. [1000, 937.5, 833.3, 625]. exit_step: the step whose x0 is the output
    (default the last); steps after it are not run. grad: run the exit step with gradient (earlier steps never have
    one), so the result carries gradient to the weights through that one forward. clean_pass: write the chunk's
    final keys with a forward at t = 0 (no gradient).
    """
    last = len(timesteps) - 1
    exit_step = last if exit_step is None else exit_step
    if not 0 <= exit_step <= last:
        raise ValueError(f"exit_step must be in 0..{last} for {len(timesteps)} steps, got {exit_step}")
    x = noise(0)
    b = x.shape[0]
    for i in range(exit_step + 1):
        t = timesteps[i]
        with torch.set_grad_enabled(grad and i == exit_step):
            t_model = torch.full((b,), model_timestep(t, model.dtype), device=model.device, dtype=torch.float32)
            v = chunk_forward(model, cache, text, x, t_model, slots)
            x0 = x0_from_velocity(x, v, t / NUM_TRAIN_TIMESTEPS)
        if i < exit_step:
            x = add_noise(x0, noise(i + 1), timesteps[i + 1] / NUM_TRAIN_TIMESTEPS)
    if clean_pass:
        with torch.no_grad():
            chunk_forward(model, cache, text, x0.detach(), torch.zeros(b, device=model.device), slots)
    return x0
