"""Gradient-reweighted DMD (stage 3 of FashionChameleon's recipe): rollout, DMD loss, reward weights, critic, EMA.

The pure pieces of the stage; :mod:`chameleon_core.training.stage_dmd` runs them in a loop. They follow the authors'
``models/gr_dmd_ic.py`` and ``trainer/distill_ic.py`` (QuanjianSong/FashionChameleon; ``docs/design.md``, the facts):

1. **Rollout** (Self-Forcing style, :func:`rollout`): prefill the reference and garment, then roll ``num_chunks``
   chunks from noise through the *same* chunk step inference uses (:func:`chameleon_core.chunk_step.denoise_chunk`).
   One exit step, shared by every chunk and drawn identically on every rank (:func:`draw_exit_step`), runs with
   gradient; the steps before it run without; the clean pass at t = 0 rewrites the chunk's keys without gradient,
   so gradient never crosses chunks.
2. **DMD** (:func:`dmd_gradient`, :func:`dmd_loss`): one timestep per sample from the shift-5 table, clamped to
   [20, 980]; ``real = cond + 3 (cond - uncond)`` from the frozen teacher's x0 (uncond: the negative prompt, same
   conditions), ``fake`` the critic's conditional x0; ``grad = (fake - real) / mean|x - real|``;
   ``loss = 0.5 sum_f A_f mean_f((x_f - sg(x_f - grad_f))^2)``.
3. **Reweighting** (:func:`frame_rewards`, :func:`reward_weights`): decode without gradient, score every pixel frame,
   fold them onto latent frames (pixel frame 0 -> latent frame 0, then groups of 4), average per chunk, and
   ``A = softmax(r / -tau)`` over frames: low reward, more gradient.
4. **Critic** (:func:`critic_loss`): flow matching of the critic on a fresh no-gradient rollout.
5. **EMA** (:class:`EMA`): an fp32 shadow that also works on FSDP2 shards.

Randomness is per *sample* (:class:`SampleRandom`): each sample's noise and timestep come from a generator seeded by
(run seed, iteration, global sample index), so one process with a batch of 2 and two processes with a batch of 1
draw the same numbers, and a resumed run draws what the uninterrupted run would have drawn without storing RNG state.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..cache import CacheGeometry
from ..chunk_step import denoise_chunk
from ..config import COND_FRAMES, StreamSettings
from ..frames import TEMPORAL_STRIDE, video_frames
from ..latents import to_raw
from ..model import TextContext, WanModel
from ..schedules import (
    NUM_TRAIN_TIMESTEPS,
    add_noise,
    shifted_timestep_table,
    x0_from_velocity,
)
from ..streaming import prefilled_cache, schedule

logger = logging.getLogger(__name__)

RewardFn = Callable[[torch.Tensor], torch.Tensor]
"""``reward(frames [N, 3, H, W] in [-1, 1]) -> [N]``: one score per pixel frame (higher is better)."""

DecodeFn = Callable[[torch.Tensor], torch.Tensor]
"""``decode(model-space latents [B, C, F, h, w]) -> pixels [B, 3, 4 (F - 1) + 1, H, W]`` in [-1, 1]."""

GUIDANCE = 3.0
"""The real score's guidance: ``real = cond + 3.0 (cond - uncond)``."""
TAU = 0.2
"""Temperature of the reward weights ``softmax(r / -tau)``."""
MIN_T, MAX_T = 20.0, 980.0
"""The DMD / critic timesteps are clamped to this range (out of 1000)."""


# ---------------------------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------------------------


def mix_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from a tuple of ints / strings (the same on every machine, process and Python run)."""
    digest = hashlib.sha256(repr(tuple(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class SampleRandom:
    """One CPU generator per sample of a local batch; draws stack along a new leading batch dim.

    Seed each sample from its *global* index (:func:`mix_seed`), so a sample's numbers do not depend on how the
    global batch is split across processes. Draws happen on the CPU and move to ``device`` (CUDA's generator gives
    other numbers than the CPU's).
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        if not seeds:
            raise ValueError("SampleRandom needs one seed per sample, got none")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    @staticmethod
    def for_samples(seed: int, purpose: str, step: int, indices: Iterable[int]) -> SampleRandom:
        """Generators for the samples with global ``indices`` at iteration ``step``, for one ``purpose``."""
        return SampleRandom([mix_seed(seed, purpose, step, i) for i in indices])

    @staticmethod
    def from_generators(generators: Sequence[torch.Generator]) -> SampleRandom:
        """Wrap ready generators (e.g. :func:`chameleon_core.training.latent_cache.sample_generator`)."""
        out = SampleRandom([0] * len(generators))
        out.generators = list(generators)
        return out

    def __len__(self) -> int:
        return len(self.generators)

    def normal(self, *shape: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Standard normal ``[B, *shape]`` fp32."""
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators]).to(device)

    def integers(self, high: int) -> torch.Tensor:
        """Uniform integers in ``0 .. high - 1``, ``[B]`` int64 (CPU)."""
        return torch.cat([torch.randint(0, high, (1,), generator=g) for g in self.generators])


def draw_exit_step(steps: int, seed: int, step: int, purpose: str = "generator") -> int:
    """The rollout's exit step for iteration ``step``, uniform in ``0 .. steps - 1``.

    A pure function of (seed, step): every rank draws the same one without a broadcast (all ranks must run the
    same number of forwards, or FSDP's collectives would hang).
    """
    g = torch.Generator().manual_seed(mix_seed(seed, "exit", purpose, step))
    return int(torch.randint(0, steps, (1,), generator=g))


def sample_timesteps(
    rng: SampleRandom, *, shift: float = 5.0, min_t: float = MIN_T, max_t: float = MAX_T
) -> torch.Tensor:
    """One timestep per sample: u uniform in 0..999, ``t = table_shift(u)``, clamped to [min_t, max_t]; ``[B]`` fp64."""
    table = shifted_timestep_table(shift)
    return table[rng.integers(NUM_TRAIN_TIMESTEPS)].clamp(min_t, max_t)


def model_timesteps(t: torch.Tensor, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """The timesteps the DiT is fed for exact ``t [B]``: rounded to ``dtype``, then truncated, as the authors build
    them (see :func:`chameleon_core.schedules.model_timestep`); σ for noising and x0 stays exact."""
    return t.to(torch.float32).to(dtype).long().to(device, torch.float32)


@dataclass(frozen=True)
class TimestepSampling:
    """How the DMD loss and the critic draw and feed timesteps (the training config's ``flow`` and ``dmd``)."""

    shift: float = 5.0
    """Shift of the table the timesteps come from (5 for Wan2.2-TI2V-5B)."""
    min_t: float = MIN_T
    max_t: float = MAX_T
    """Clamp range of the drawn timesteps."""
    quantize: bool = True
    """Feed the DiT the dtype-quantized timestep (:func:`model_timesteps`), as inference and the rollout do; the
    noise level stays exact either way."""

    def sample(self, rng: SampleRandom) -> torch.Tensor:
        """One exact timestep per sample ``[B]`` (fp64), :func:`sample_timesteps`."""
        return sample_timesteps(rng, shift=self.shift, min_t=self.min_t, max_t=self.max_t)

    def fed(self, t: torch.Tensor, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """What the DiT is given for exact ``t``, ``[B]`` fp32 on ``device``."""
        return model_timesteps(t, dtype, device) if self.quantize else t.to(device, torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# 1. Rollout
# ---------------------------------------------------------------------------------------------------------------


def rollout_settings(chunk_frames: int, num_chunks: int, *, steps: int = 4, shift: float = 5.0) -> StreamSettings:
    """Stream settings whose cache holds the whole rollout (2 conditions + every chunk; 23 frames for 7 x 3), so the
    rollout never evicts, as in the authors' training. (The sink is the first chunk, as at inference; a one-chunk
    rollout has none, since StreamSettings wants room for a window.)"""
    return StreamSettings(
        chunk_frames=chunk_frames, cache_frames=COND_FRAMES + chunk_frames * num_chunks,
        sink_chunks=min(1, num_chunks - 1),
        steps=steps, shift=shift,
    )


def prepare_context(model: WanModel, context: torch.Tensor | TextContext) -> TextContext:
    """Prompt features -> cross-attention K/V of ``model`` (with gradient if it is enabled: the text embedding and
    the cross-attention K/V projections train through it)."""
    return context if isinstance(context, TextContext) else model.prepare_text(context)


def rollout(
    model: WanModel,
    *,
    context: torch.Tensor | TextContext,
    reference: torch.Tensor,
    garment: torch.Tensor,
    settings: StreamSettings,
    num_chunks: int,
    exit_step: int,
    rng: SampleRandom,
    grad: bool = True,
) -> torch.Tensor:
    """Self-Forcing rollout of the causal generator; returns the latents ``[B, C, num_chunks * chunk, h, w]`` (fp32).

    context: prompt features ``[B or 1, L, text_dim]`` or a :class:`TextContext` of this model; reference, garment:
    model-space latents ``[B, C, 1, h, w]``; settings: chunk frames, cache length, steps, shift (see
    :func:`rollout_settings`); exit_step: the step whose x0 is every chunk's output (:func:`draw_exit_step`); rng:
    one generator per sample for the start and re-noising noise. With ``grad`` the result carries gradient to the
    weights through the exit step of each chunk (and the prompt embedding) only.
    """
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
    b, ch, _, h, w = reference.shape
    if len(rng) != b:
        raise ValueError(f"rng has {len(rng)} generators for a batch of {b}; seed one per sample")
    c = settings.chunk_frames
    device = model.device
    timesteps = schedule(settings.steps, settings.shift)
    grad = grad and torch.is_grad_enabled()  # under an outer no_grad the exit step must not switch gradient on
    with torch.set_grad_enabled(grad):
        text = prepare_context(model, context)
        # 1. Initialise the cache: the conditions' keys at t = 0 (no gradient: the cache stores detached keys).
        geometry = CacheGeometry(settings, model.config.tokens_per_latent_grid(h, w))
        cache = prefilled_cache(model, geometry, text, reference, garment)
        outputs = []
        for k in range(num_chunks):
            # 2. Claim the chunk's slots, then 3. denoise it to the exit step and run the clean pass (shared step).
            slots = cache.reserve(c, COND_FRAMES + k * c)
            x0 = denoise_chunk(
                model, cache, text, slots, timesteps, lambda _step: rng.normal(ch, c, h, w, device=device),
                exit_step=exit_step, grad=grad,
            )
            outputs.append(x0)
    return torch.cat(outputs, dim=2)


# ---------------------------------------------------------------------------------------------------------------
# 2. DMD gradient and loss
# ---------------------------------------------------------------------------------------------------------------


def predict_x0(
    model: nn.Module,
    x_t: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor | TextContext,
    reference: torch.Tensor,
    garment: torch.Tensor,
    *,
    quantize: bool = True,
) -> torch.Tensor:
    """x0 prediction of a bidirectional in-context model at noisy ``x_t [B, C, F, h, w]``, exact timesteps ``t [B]``.

    ``model`` is called (``model(x, timestep, context, reference=, garment=)``) so FSDP's hooks run; it may be a
    sharded :class:`WanModel`. The conditions sit at timestep 0 inside the model. ``quantize``: feed the DiT the
    dtype-quantized timestep (:func:`model_timesteps`).
    """
    device = x_t.device
    fed = model_timesteps(t, model.dtype, device) if quantize else t.to(device, torch.float32)
    v = model(x_t, fed, context, reference=reference, garment=garment)
    sigma = (t / NUM_TRAIN_TIMESTEPS).to(device, torch.float32).view(-1, 1, 1, 1, 1)
    return x0_from_velocity(x_t, v, sigma)


@torch.no_grad()
def real_x0(
    teacher: nn.Module,
    x_t: torch.Tensor,
    t: torch.Tensor,
    *,
    positive: torch.Tensor | TextContext,
    negative: torch.Tensor | TextContext,
    reference: torch.Tensor,
    garment: torch.Tensor,
    guidance: float = GUIDANCE,
    quantize: bool = True,
) -> torch.Tensor:
    """The real score's x0: ``cond + guidance (cond - uncond)`` from the frozen teacher (uncond: negative prompt)."""
    cond = predict_x0(teacher, x_t, t, positive, reference, garment, quantize=quantize)
    uncond = predict_x0(teacher, x_t, t, negative, reference, garment, quantize=quantize)
    return cond + guidance * (cond - uncond)


def dmd_gradient(x: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(fake - real) / mean|x - real|`` with one normaliser per sample (``[B, ...]``; no gradient).

    The normaliser is floored at ``eps`` so a generator that already reproduces the teacher gives a finite step.
    """
    x, real, fake = x.detach().float(), real.float(), fake.float()
    norm = (x - real).abs().flatten(1).mean(dim=1).clamp_min(eps)  # [B]
    return (fake - real) / norm.view(-1, *([1] * (x.ndim - 1)))


def dmd_loss(x: torch.Tensor, grad: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``0.5 sum_f A_f mean_f((x_f - sg(x_f - grad_f))^2)`` averaged over the batch.

    x: generator latents ``[B, C, F, h, w]`` with gradient; grad: :func:`dmd_gradient`; weights: ``[B, F]`` frame
    weights A (summing to 1 per sample; no gradient), None for uniform ``1/F``, which is the plain DMD loss
    ``0.5 mean((x - sg(x - grad))^2)``.
    """
    b, f = x.shape[0], x.shape[2]
    if weights is None:
        weights = x.new_full((b, f), 1.0 / f)
    if weights.shape != (b, f):
        raise ValueError(f"frame weights must be [B, F] = [{b}, {f}], got {tuple(weights.shape)}")
    target = (x - grad).detach()
    per_frame = ((x.float() - target.float()) ** 2).mean(dim=(1, 3, 4))  # [B, F]
    return 0.5 * (weights.detach().to(per_frame) * per_frame).sum(dim=1).mean()


@dataclass
class DMDTerms:
    """What one generator loss computed, for logging."""

    loss: torch.Tensor
    timesteps: torch.Tensor
    """The DMD timestep of each sample, ``[B]``."""
    weights: torch.Tensor
    """The frame weights A used, ``[B, F]``."""
    grad_norm: torch.Tensor
    """``mean|grad|`` per sample, ``[B]``."""


def generator_loss(
    x: torch.Tensor,
    *,
    teacher: nn.Module,
    critic: nn.Module,
    positive: torch.Tensor | TextContext,
    negative: torch.Tensor | TextContext,
    critic_positive: torch.Tensor | TextContext | None = None,
    reference: torch.Tensor,
    garment: torch.Tensor,
    rng: SampleRandom,
    weights: torch.Tensor | None = None,
    timesteps: TimestepSampling = TimestepSampling(),
    guidance: float = GUIDANCE,
) -> DMDTerms:
    """The GR-DMD generator loss for rollout latents ``x [B, C, F, h, w]`` (with gradient).

    Draws one timestep per sample (``timesteps``, :func:`sample_timesteps`) and noise from ``rng``, noises ``x`` to it, takes the
    real score from ``teacher`` with CFG and the fake score from ``critic`` (conditional), both without gradient.
    ``critic_positive`` is the prompt prepared for the critic when ``positive`` is a TextContext of the teacher.
    """
    b, ch, f, h, w = x.shape
    t = timesteps.sample(rng)
    noise = rng.normal(ch, f, h, w, device=x.device)
    sigma = (t / NUM_TRAIN_TIMESTEPS).to(x.device, torch.float32).view(-1, 1, 1, 1, 1)
    with torch.no_grad():
        x_t = add_noise(x.detach().float(), noise, sigma)
        real = real_x0(
            teacher, x_t, t, positive=positive, negative=negative, reference=reference, garment=garment,
            guidance=guidance, quantize=timesteps.quantize,
        )
        fake_context = critic_positive if critic_positive is not None else positive
        fake = predict_x0(critic, x_t, t, fake_context, reference, garment, quantize=timesteps.quantize)
        grad = dmd_gradient(x, real, fake)
    if weights is None:
        weights = x.new_full((b, f), 1.0 / f)
    loss = dmd_loss(x, grad, weights)
    return DMDTerms(loss, t, weights, grad.abs().flatten(1).mean(dim=1))


# ---------------------------------------------------------------------------------------------------------------
# 3. Reward weights
# ---------------------------------------------------------------------------------------------------------------


def vae_decoder(vae) -> DecodeFn:
    """A :data:`DecodeFn` over a :class:`~chameleon_core.vae.WanVAE` (model-space latents in, pixels out)."""

    def decode(latents: torch.Tensor) -> torch.Tensor:
        raw = to_raw(latents.to(vae.device, torch.float32)).to(vae.dtype)
        return vae.decode(raw).float()

    return decode


def pixel_to_latent_frames(scores: torch.Tensor, latent_frames: int, temporal_stride: int = TEMPORAL_STRIDE
                           ) -> torch.Tensor:
    """Per-video-frame scores ``[B, V]`` -> per-latent-frame ``[B, F]``: each latent frame takes the mean over the video
    frames it decodes to (:func:`~chameleon_core.frames.latent_frame_video_range`: frame 0 alone, then groups of
    ``temporal_stride``)."""
    b, n = scores.shape
    want = video_frames(latent_frames, stride=temporal_stride)
    if n != want:
        raise ValueError(
            f"{latent_frames} latent frames decode to {want} pixel frames, got scores for {n}; "
            f"decode with the VAE that matches the model (temporal stride {temporal_stride})"
        )
    # the groups are contiguous: frame 0 alone, then equal groups (one reshape instead of a loop over the ranges)
    rest = scores[:, 1:].reshape(b, latent_frames - 1, temporal_stride).mean(dim=2)
    return torch.cat([scores[:, :1], rest], dim=1)


def chunk_average(values: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    """``[B, F]`` -> ``[B, F]``: each chunk's frames replaced by the chunk's mean (a last short chunk averages its own)."""
    f = values.shape[1]
    out = torch.empty_like(values)
    for start in range(0, f, chunk_frames):
        piece = values[:, start : start + chunk_frames]
        out[:, start : start + chunk_frames] = piece.mean(dim=1, keepdim=True)
    return out


@torch.no_grad()
def frame_rewards(
    latents: torch.Tensor, *, decode: DecodeFn, reward: RewardFn, chunk_frames: int, temporal_stride: int = TEMPORAL_STRIDE
) -> torch.Tensor:
    """Rewards per latent frame ``[B, F]`` for model-space ``latents [B, C, F, h, w]``, averaged per chunk.

    Decodes (no gradient), scores every pixel frame with ``reward``, folds pixel frames onto latent frames
    (:func:`pixel_to_latent_frames`) and averages over each chunk (:func:`chunk_average`).
    """
    b, _, f = latents.shape[:3]
    rows = []
    for i in range(b):  # one sample at a time: the decoded video is the memory peak of the stage
        video = decode(latents[i : i + 1].detach())  # [1, 3, T, H, W]
        frames = video[0].permute(1, 0, 2, 3)  # [T, 3, H, W]
        scores = reward(frames).reshape(-1).float()
        if scores.shape[0] != frames.shape[0]:
            raise ValueError(
                f"the reward must return one score per frame ([N] for N = {frames.shape[0]} frames), got shape "
                f"{tuple(scores.shape)}"
            )
        rows.append(scores.to(latents.device))
    per_pixel = torch.stack(rows)  # [B, T]
    return chunk_average(pixel_to_latent_frames(per_pixel, f, temporal_stride), chunk_frames)


def reward_weights(rewards: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """``A = softmax(r / -tau)`` over frames ``[B, F]`` (low reward, more weight; rows sum to 1; no gradient)."""
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}; the paper uses 0.2 (large tau: uniform weights)")
    return torch.softmax(rewards.detach().double() / -tau, dim=1).to(rewards.dtype)


# ---------------------------------------------------------------------------------------------------------------
# 4. Critic
# ---------------------------------------------------------------------------------------------------------------


def critic_loss(
    critic: nn.Module,
    x_gen: torch.Tensor,
    *,
    context: torch.Tensor | TextContext,
    reference: torch.Tensor,
    garment: torch.Tensor,
    rng: SampleRandom,
    timesteps: TimestepSampling = TimestepSampling(),
) -> torch.Tensor:
    """Flow-matching loss ``mean((v_pred - (eps - x_gen))^2)`` of the critic on generated latents (no gradient into
    ``x_gen``), at one shifted timestep per sample (``timesteps``, :func:`sample_timesteps`)."""
    x_gen = x_gen.detach().float()
    _, ch, f, h, w = x_gen.shape
    t = timesteps.sample(rng)
    noise = rng.normal(ch, f, h, w, device=x_gen.device)
    sigma = (t / NUM_TRAIN_TIMESTEPS).to(x_gen.device, torch.float32).view(-1, 1, 1, 1, 1)
    x_t = add_noise(x_gen, noise, sigma)
    v = critic(x_t, timesteps.fed(t, critic.dtype, x_gen.device), context, reference=reference, garment=garment)
    return ((v.float() - (noise - x_gen)) ** 2).mean()


# ---------------------------------------------------------------------------------------------------------------
# 5. EMA
# ---------------------------------------------------------------------------------------------------------------


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of an FSDP2 DTensor parameter, or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


class EMA:
    """fp32 exponential moving average of a module's parameters, ``shadow = d shadow + (1 - d) p``.

    Before ``start_step`` the shadow simply follows the parameters (so it starts as a copy of the weights at
    ``start_step``, as the authors start theirs). With FSDP2 each rank keeps the shadow of its own shard (the
    parameter's ``to_local()``). ``into``: an optional module of the same structure and sharding (e.g. a second,
    frozen copy of the generator prepared the same way) whose fp32 parameters *are* the shadow; then the shadow is
    saved and exported like any model (DCP checkpoints, :func:`~chameleon_core.training.parallel.export_weights`).
    Without it the shadow is private tensors (:meth:`state_dict` / :meth:`full_state_dict`).
    """

    def __init__(
        self, module: nn.Module, decay: float = 0.99, start_step: int = 200, *, into: nn.Module | None = None
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}; the paper uses 0.99")
        self.decay = decay
        self.start_step = start_step
        self.module = into
        if into is None:
            self.shadow: dict[str, torch.Tensor] = {
                name: _local(p.detach()).float().clone() for name, p in module.named_parameters()
            }
            return
        targets = dict(into.named_parameters())
        self.shadow = {}
        for name, p in module.named_parameters():
            target = targets.get(name)
            local = None if target is None else _local(target.detach())
            if local is None or local.shape != _local(p.detach()).shape or local.dtype != torch.float32:
                raise ValueError(
                    f"EMA module parameter {name!r} must be an fp32 shard shaped like the model's "
                    f"{tuple(_local(p.detach()).shape)}, got "
                    f"{None if local is None else (tuple(local.shape), local.dtype)}; prepare the EMA copy exactly "
                    "like the model (same sharding, fp32 master weights)"
                )
            self.shadow[name] = local  # a view of the module's storage: updating it updates the module
            with torch.no_grad():
                local.copy_(_local(p.detach()).float())

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        """Fold the current parameters in after update ``step`` (a copy before ``start_step``)."""
        for name, p in module.named_parameters():
            local = _local(p.detach()).float()
            if step < self.start_step:
                self.shadow[name].copy_(local)
            else:
                self.shadow[name].lerp_(local, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """This rank's shadow (local shards under FSDP), for a resumable checkpoint."""
        return {f"shadow.{k}": v for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in self.shadow.items():
            key = f"shadow.{name}"
            if key not in state:
                raise KeyError(f"EMA state has no {key!r}; the checkpoint was written for another model")
            if state[key].shape != value.shape:
                raise ValueError(
                    f"EMA state {key!r} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}; resume "
                    "with the same model and the same number of processes"
                )
            value.copy_(state[key])

    @torch.no_grad()
    def full_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Whole fp32 tensors of the shadow, named like ``module``'s parameters (a collective under FSDP)."""
        out = {}
        for name, p in module.named_parameters():
            shadow = self.shadow[name]
            if hasattr(p, "to_local"):
                from torch.distributed.tensor import DTensor

                shadow = DTensor.from_local(
                    shadow, p.device_mesh, p.placements, shape=p.shape, stride=p.stride()
                ).full_tensor()
            out[name] = shadow.detach().cpu().clone()
        return out
