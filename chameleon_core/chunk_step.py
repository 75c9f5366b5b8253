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

Compile-ready: inside a chunk nothing waits for the device -- positions and slots are Python ints, timesteps are
Python floats turned into one cached device tensor per value (:func:`timestep_tensor`, which also lets the model
embed each timestep once per stream), and the noise can be drawn on the device (``Rollout(noise="device")``). Shapes
are static per stream, so ``torch.compile`` (:meth:`WanModel.compile_blocks
<chameleon_core.model.WanModel.compile_blocks>`) and CUDA graphs see the same pass every chunk. The one sync per
chunk is the caller's finite check.

The clean pass can be skipped (``clean_pass=False``): the chunk's slots then keep the keys its last denoising step
wrote (the keys of the noisy input at the last timestep, not of the clean output); 1 forward in 5 saved, at a
quality cost the benchmark reports against the exact path.

Other students' loops (:class:`~chameleon_core.schedules.StepSchedule`, from a stream profile): σ may come from the
training table and the DiT may be fed the exact timestep (the Self-Forcing family); LongLive 2.0 denoises a chunk
with Wan's flow UniPC instead of re-noising (:func:`~chameleon_core.samplers.flow_unipc_sample`, the teacher's
solver). ``clean_frames`` holds the chunk's first frames to given latents at t = 0 (image-to-video's first frame),
``rope_offset`` moves the chunk's RoPE positions (multi-shot).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

from .cache import KVCache
from .causal import chunk_forward
from .stream_options import ChunkSource
from .model import TextContext, WanModel
from .samplers import flow_unipc_sample
from .schedules import StepSchedule, add_noise, x0_from_velocity

NoiseFn = Callable[[int], torch.Tensor]
"""``noise(step)`` -> fresh noise ``[B, C, F, h, w]`` for step ``step`` (0: the start; i > 0: re-noising to step i)."""

_TIMESTEPS: OrderedDict[tuple, torch.Tensor] = OrderedDict()


def timestep_tensor(value: float, batch: int, device: torch.device) -> torch.Tensor:
    """The model timestep ``value`` as an fp32 ``[batch]`` tensor on ``device``: one tensor per (value, batch,
    device), reused by every chunk (no fill kernel per pass; the model caches the embedding of a tensor it has seen).
    Callers must not modify it."""
    key = (float(value), batch, torch.device(device))
    t = _TIMESTEPS.get(key)
    if t is None:
        t = _TIMESTEPS[key] = torch.full((batch,), float(value), device=device, dtype=torch.float32)
        if len(_TIMESTEPS) > 64:
            _TIMESTEPS.popitem(last=False)
    else:
        _TIMESTEPS.move_to_end(key)
    return t


class ChunkInterrupted(Exception):
    """``should_stop()`` turned True between two denoising steps: the chunk was abandoned. Its caller rewinds what it
    claimed (``streaming.Rollout.step`` does) and ends its loop with the chunks it completed."""


def denoise_chunk(
    model: WanModel,
    cache: KVCache,
    text: TextContext,
    slots: list[int],
    timesteps: tuple[float, ...] | list[float] | StepSchedule,
    noise: NoiseFn,
    *,
    exit_step: int | None = None,
    grad: bool = False,
    clean_pass: bool = True,
    source: ChunkSource | None = None,
    condition_bias: tuple[float, ...] | list[float] | None = None,
    local_frames: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    clean_frames: torch.Tensor | None = None,
    rope_offset: int = 0,
) -> torch.Tensor:
    """Denoise one chunk in the claimed cache ``slots``; returns its clean latents ``[B, C, F, h, w]`` (fp32).

    timesteps: the warped few-step list, e.g. [1000, 937.5, 833.3, 625]. exit_step: the step whose x0 is the output
    (default the last); steps after it are not run. grad: run the exit step with gradient (earlier steps never have
    one), so the result carries gradient to the weights through that one forward. clean_pass: write the chunk's
    final keys with a forward at t = 0 (no gradient); False keeps the keys of the last step run.

    Options (:mod:`~chameleon_core.stream_options`; None = off, the plain path): ``source`` starts the chunk from source
    latents noised to ``source.start_step`` (SDEdit; only the remaining steps run; optionally only inside its
    mask); ``condition_bias`` is one logit bias per step on the reference and garment keys (0 takes the plain
    path; the clean pass has none); ``local_frames`` is frame-local attention over the history.

    should_stop: polled before every step after the first and before the clean pass; True raises
    :class:`ChunkInterrupted` (so a Cancel at a large size waits one step, not one chunk).

    timesteps may be a :class:`~chameleon_core.schedules.StepSchedule` (a stream profile's σ, fed timesteps and
    sampler); a plain list is FashionChameleon's (σ = t / 1000, the DiT fed the dtype-rounded value).
    ``clean_frames`` ``[B, C, k, h, w]``: the chunk's first k frames are held to these latents at t = 0 in every pass
    and in the output (image-to-video). ``rope_offset``: added to the chunk's RoPE frame positions.
    """
    sched = timesteps if isinstance(timesteps, StepSchedule) else StepSchedule.from_timesteps(timesteps)
    if sched.sampler == "unipc":
        if exit_step is not None or grad or source is not None or condition_bias is not None:
            raise ValueError("the UniPC chunk sampler (LongLive 2.0's profile) runs inference only, without a source "
                             "video, condition weighting or an exit step")
        return _unipc_chunk(model, cache, text, slots, sched, noise, clean_pass=clean_pass, local_frames=local_frames,
                            should_stop=should_stop, clean_frames=clean_frames, rope_offset=rope_offset)
    last = len(sched) - 1
    exit_step = last if exit_step is None else exit_step
    if not 0 <= exit_step <= last:
        raise ValueError(f"exit_step must be in 0..{last} for {len(timesteps)} steps, got {exit_step}")
    if condition_bias is not None and len(condition_bias) != len(sched):
        raise ValueError(f"condition_bias has {len(condition_bias)} values for {len(sched)} steps; give one per step")
    # The source (SDEdit, inference only) starts the chunk at its start step from the source latents; without one
    # the chunk starts from noise at step 0. Each step's input is the running estimate x0 noised to the step's σ
    # with the step's own noise (step 0 from noise: pure noise(0)).
    start, x0, src, mask = 0, None, None, None
    if source is not None:
        if grad:
            raise ValueError("a chunk started from a source video is inference only (grad=False)")
        src, mask = source.latents.to(model.device, torch.float32), source.mask
        if source.start_step is None:  # strength 0: the source itself, no denoising step
            start, x0 = exit_step + 1, src.clone()
        elif not 0 <= source.start_step <= exit_step:
            raise ValueError(f"the source's start step {source.start_step} is after the exit step {exit_step}")
        else:
            start, x0 = source.start_step, src
    for i in range(start, exit_step + 1):
        if i > start:
            _poll(should_stop, f"stopped before denoising step {i + 1} of {exit_step + 1}")
        sigma = sched.sigmas[i]
        x = noise(0) if x0 is None else add_noise(x0, noise(i), sigma)
        with torch.set_grad_enabled(grad and i == exit_step):
            t_model = timestep_tensor(sched.fed(i, model.dtype), x.shape[0], model.device)
            if clean_frames is not None:
                x, t_model = _hold(x, clean_frames), _held_timesteps(t_model, x.shape[2], clean_frames.shape[2])
            v = chunk_forward(model, cache, text, x, t_model, slots, condition_bias=_bias(condition_bias, i),
                              local_frames=local_frames, rope_offset=rope_offset)
            x0 = x0_from_velocity(x, v, sigma)
        if mask is not None:  # outside the mask the output is the source
            x0 = mask * x0 + (1 - mask) * src
        if clean_frames is not None:
            x0 = _hold(x0, clean_frames)
    if clean_pass:
        _poll(should_stop, "stopped before the clean pass")
        _clean_pass(model, cache, text, x0, slots, local_frames, rope_offset)
    return x0


def _clean_pass(model: WanModel, cache: KVCache, text: TextContext, x0: torch.Tensor, slots: list[int],
                local_frames: int | None, rope_offset: int) -> None:
    """The chunk's clean output once more at t = 0, without gradient: its keys are what later chunks read."""
    with torch.no_grad():
        chunk_forward(model, cache, text, x0.detach(), timestep_tensor(0.0, x0.shape[0], model.device), slots,
                      local_frames=local_frames, rope_offset=rope_offset)


def _hold(x: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """``x`` with its first frames replaced by ``clean`` (the image-to-video first frame)."""
    return torch.cat([clean.to(x.device, x.dtype), x[:, :, clean.shape[2] :]], dim=2)


def _held_timesteps(t: torch.Tensor, frames: int, held: int) -> torch.Tensor:
    """Per-frame timesteps ``[B, F]`` from ``t [B]`` with the first ``held`` frames at 0."""
    per_frame = t[:, None].expand(t.shape[0], frames).clone()
    per_frame[:, :held] = 0.0
    return per_frame


def _unipc_chunk(model: WanModel, cache: KVCache, text: TextContext, slots: list[int], sched: StepSchedule,
                 noise: NoiseFn, *, clean_pass: bool, local_frames: int | None, should_stop: Callable[[], bool] | None,
                 clean_frames: torch.Tensor | None, rope_offset: int) -> torch.Tensor:
    """One chunk denoised by Wan's flow UniPC from ``noise(0)`` over ``sched.sigmas`` (LongLive 2.0's chunk loop:
    a fresh solver per chunk, the DiT fed ``int(σ * 1000)``), then the clean pass."""
    steps = len(sched)

    def velocity(x: torch.Tensor, _sigma: float, step: int) -> torch.Tensor:
        if step:
            _poll(should_stop, f"stopped before denoising step {step + 1} of {steps}")
        t = timestep_tensor(sched.fed(step, model.dtype), x.shape[0], model.device)
        if clean_frames is not None:
            x, t = _hold(x, clean_frames), _held_timesteps(t, x.shape[2], clean_frames.shape[2])
        return chunk_forward(model, cache, text, x, t, slots, local_frames=local_frames, rope_offset=rope_offset)

    x0 = flow_unipc_sample(velocity, noise(0), sched.sigmas)
    if clean_frames is not None:
        x0 = _hold(x0, clean_frames)
    if clean_pass:
        _poll(should_stop, "stopped before the clean pass")
        _clean_pass(model, cache, text, x0, slots, local_frames, rope_offset)
    return x0


def _poll(should_stop: Callable[[], bool] | None, where: str) -> None:
    """Raise :class:`ChunkInterrupted` when ``should_stop()`` says so."""
    if should_stop is not None and should_stop():
        raise ChunkInterrupted(where)


def _bias(schedule: tuple[float, ...] | list[float] | None, step: int) -> float | None:
    """The step's condition bias; 0 is None, so a zero schedule runs exactly the plain attention."""
    if schedule is None or schedule[step] == 0:
        return None
    return float(schedule[step])
