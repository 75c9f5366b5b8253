"""Per-chunk options of the stream (issue 16): a source video, condition weighting and frame-local attention.

Three neighbouring systems map onto the in-context student without new weights:

- **Source video** (VITON-DiT's try-on onto an existing person video; FastVMT-style motion transfer from a driving
  video). SDEdit in the chunk step: a chunk starts from the source's latents noised, with flow matching
  (``x_t = (1 - σ) x0 + σ ε``), to the step of the student's schedule whose σ is nearest the chosen ``strength``,
  and runs only the remaining steps. The student knows only its few timesteps (σ = 1, .9375, .833, .625 at 4 steps,
  shift 5), so strengths snap to them; strength 0 copies the source (no denoising step; the clean pass still writes
  the chunk's keys). With a ``mask`` (1 = regenerate, 0 = keep, soft values blend), every step's input outside the
  mask is the source noised to that step's level *with the same noise the step draws*, and the chunk's output
  outside the mask is the source itself: ``x_in = add_noise(m x0 + (1 - m) src, ε_i, σ_i)``, ``out = m x0 +
  (1 - m) src``. Try-on uses a high strength inside a garment mask; motion transfer a lower strength over the whole
  frame.
- **Condition weighting** (CustomCrafter: a video model restores motion in the early denoising steps and appearance
  detail in the late ones). One additive logit bias per denoising step on the reference and garment keys, seen by
  the video queries: negative early (the video follows its own motion), 0 late (full garment detail). A value of 0
  takes the plain attention path, so an all-zero schedule is bit-identical to no schedule. The chunk's clean pass
  (t = 0, it writes the keys later chunks read) runs without a bias.
- **Local attention** (FastVMT's frame-local attention, a speed option): each chunk attends to the conditions, the
  sink and only the ``local_frames`` latent frames just before it, instead of the whole FIFO window.

A stream takes them with :func:`with_options` (a new :class:`~chameleon_core.streaming.StreamState`), and
:func:`check_stream_options` refuses, before any chunk runs, options that would fail mid-way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .frames import TEMPORAL_STRIDE, latent_frame_video_range
from .schedules import NUM_TRAIN_TIMESTEPS

if TYPE_CHECKING:
    from .streaming import StreamState


@dataclass(frozen=True)
class ChunkSource:
    """What one chunk is started from: :func:`~chameleon_core.chunk_step.denoise_chunk`'s ``source``."""

    latents: torch.Tensor
    """Model-space source latents of the chunk ``[B, C, F, h, w]``."""
    start_step: int | None
    """First denoising step to run (the source is noised to its σ); None copies the source (strength 0)."""
    mask: torch.Tensor | None = None
    """``[B or 1, 1, F or 1, h, w]`` in 0..1, 1 = regenerate; None regenerates everywhere."""


def start_step_for_strength(timesteps: Sequence[float], strength: float) -> int | None:
    """The step of ``timesteps`` (e.g. [1000, 937.5, 833.3, 625]) whose σ = t / 1000 is nearest ``strength``
    (ties go to the noisier step); None for strength 0 (copy the source)."""
    check_strength(strength)
    if strength == 0:
        return None
    sigmas = [t / NUM_TRAIN_TIMESTEPS for t in timesteps]
    return min(range(len(sigmas)), key=lambda i: (abs(sigmas[i] - strength), i))


def check_strength(strength: float, name: str = "strength") -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise ValueError(f"{name} must be a number in [0, 1] (0 keeps the source, 1 ignores it), got {strength!r}")
    return float(strength)


@dataclass(frozen=True, eq=False)
class SourceVideo:
    """A source video streamed into a stream's chunks (held by :class:`~chameleon_core.streaming.StreamState`).

    The chunk at stream latent frame ``f`` reads source frames ``f - offset ..``; its strength is ``strength`` or,
    given a tuple, ``strength[chunk]`` for the source's chunk index (the keyframe fill uses 0 for its first chunk).
    """

    latents: torch.Tensor
    """Model-space latents ``[B, C, T, h, w]`` (host)."""
    strength: float | tuple[float, ...]
    mask: torch.Tensor | None = None
    """``[B or 1, 1, T or 1, h, w]`` in 0..1 on the latent grid (:func:`latent_mask`), or None."""
    offset: int = 0
    """The stream latent frame that source frame 0 lands on."""

    def __post_init__(self) -> None:
        lat = self.latents
        if not isinstance(lat, torch.Tensor) or lat.ndim != 5 or not lat.is_floating_point():
            got = tuple(lat.shape) if isinstance(lat, torch.Tensor) else type(lat).__name__
            raise ValueError(f"source latents must be a float video latent [B, C, T, h, w], got {got}")
        strengths = self.strength if isinstance(self.strength, tuple) else (self.strength,)
        for s in strengths:
            check_strength(s)
        m = self.mask
        if m is not None:
            b, _, t, h, w = lat.shape
            if m.ndim != 5 or m.shape[1] != 1 or m.shape[0] not in (1, b) or m.shape[2] not in (1, t) \
                    or tuple(m.shape[3:]) != (h, w):
                raise ValueError(
                    f"source mask must be [1 or {b}, 1, 1 or {t}, {h}, {w}] on the latent grid of the source, got "
                    f"{tuple(m.shape)}; build it with chameleon_core.stream_options.latent_mask"
                )

    @property
    def latent_frames(self) -> int:
        """Latent frames of the source video."""
        return self.latents.shape[2]

    def check_covers(self, stream_frame: int, frames: int) -> None:
        """Raise ValueError unless the source holds stream latent frames ``stream_frame .. + frames - 1``."""
        start = stream_frame - self.offset
        if start < 0 or start + frames > self.latent_frames:
            raise ValueError(
                f"the source video holds latent frames 0..{self.latent_frames - 1} (placed at stream frame {self.offset}), "
                f"but stream frames {stream_frame}..{stream_frame + frames - 1} need source frames {start}.."
                f"{start + frames - 1}; generate at most {max(0, self.latent_frames + self.offset - stream_frame)} more "
                "latent frames from here, or give a longer video"
            )

    def chunk(self, stream_frame: int, chunk_frames: int, timesteps: Sequence[float],
              device: torch.device) -> ChunkSource:
        """The :class:`ChunkSource` of the chunk starting at stream latent frame ``stream_frame``."""
        self.check_covers(stream_frame, chunk_frames)
        start = stream_frame - self.offset
        index = start // chunk_frames
        if isinstance(self.strength, tuple):
            strength = self.strength[min(index, len(self.strength) - 1)]
        else:
            strength = self.strength
        lat = self.latents[:, :, start : start + chunk_frames].to(device, torch.float32)
        mask = None
        if self.mask is not None:
            m = self.mask if self.mask.shape[2] == 1 else self.mask[:, :, start : start + chunk_frames]
            mask = m.to(device, torch.float32)
        return ChunkSource(lat, start_step_for_strength(timesteps, strength), mask)


def latent_mask(mask: torch.Tensor, latent_frames: int, height: int, width: int,
                temporal_stride: int = TEMPORAL_STRIDE) -> torch.Tensor:
    """A pixel mask ``[T_pix or 1, H, W]`` (ComfyUI MASK, 1 = regenerate) -> ``[1, 1, latent_frames or 1, h, w]``.

    Space: the fraction of each latent cell's pixels inside the mask (area pooling). Time, as the causal VAE maps
    frames (:func:`~chameleon_core.frames.latent_frame_video_range`): latent frame 0 is video frame 0, latent frame
    j > 0 covers video frames ``4j - 3 .. 4j``; a cell takes the largest value over its frames (the garment may pass
    through it in any of them; a latent frame past the mask's end takes its last frame). A one-frame mask stays one
    frame (it applies to every frame).
    """
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"mask must be [frames, H, W] or [H, W], got shape {tuple(mask.shape)}")
    m = F.interpolate(mask.float()[:, None], size=(height, width), mode="area")[:, 0]  # [T_pix, h, w]
    if m.shape[0] == 1:
        return m[None, None].clamp(0, 1)
    frames = []
    for j in range(latent_frames):
        covered = latent_frame_video_range(j, stride=temporal_stride)
        group = m[covered.start : covered.stop]
        frames.append(group.amax(0) if len(group) else m[-1])
    return torch.stack(frames)[None, None].clamp(0, 1)


# -- condition weighting ---------------------------------------------------------------------------------------

RAMPS = ("linear", "cosine", "step")


def condition_weight_schedule(steps: int, early_bias: float, late_bias: float = 0.0, ramp: str = "linear",
                              switch_step: int | None = None) -> tuple[float, ...]:
    """One logit bias per denoising step, from ``early_bias`` at the first step to ``late_bias`` at the last.

    ``ramp``: "linear" / "cosine" interpolate; "step" holds ``early_bias`` before ``switch_step`` (default: half
    the steps) and ``late_bias`` from it on. Negative values weaken the reference and garment early (CustomCrafter).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1 (the sampler's denoising steps), got {steps!r}")
    for name, v in (("early_bias", early_bias), ("late_bias", late_bias)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number (a logit bias; 0 = unchanged), got {v!r}")
    if ramp not in RAMPS:
        raise ValueError(f"ramp must be one of {RAMPS}, got {ramp!r}")
    if ramp == "step":
        switch = steps // 2 if switch_step is None else switch_step
        if not 0 <= switch <= steps:
            raise ValueError(f"switch_step must be in 0..{steps}, got {switch}")
        return tuple(float(early_bias) if i < switch else float(late_bias) for i in range(steps))
    out = []
    for i in range(steps):
        u = i / (steps - 1) if steps > 1 else 1.0
        if ramp == "cosine":
            u = 0.5 - 0.5 * math.cos(math.pi * u)
        out.append(float(early_bias + (late_bias - early_bias) * u))
    return tuple(out)


@dataclass(frozen=True)
class ConditionWeighting:
    """A condition weighting, resolved to one bias per step for the sampler that uses it (:meth:`for_steps`).

    Either a ramp (``early_bias`` -> ``late_bias``, :func:`condition_weight_schedule`), which fits any step count,
    or explicit per-step ``values``, which must have exactly the sampler's steps.
    """

    early_bias: float = 0.0
    late_bias: float = 0.0
    ramp: str = "linear"
    values: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.values is None:
            condition_weight_schedule(1, self.early_bias, self.late_bias, self.ramp)  # validates the numbers

    def for_steps(self, steps: int, where: str = "the sampler") -> tuple[float, ...]:
        if self.values is not None:
            return check_condition_weights(self.values, steps, where)
        return condition_weight_schedule(steps, self.early_bias, self.late_bias, self.ramp)


def as_weighting(weights: ConditionWeighting | Sequence[float] | None) -> ConditionWeighting | None:
    """None, a :class:`ConditionWeighting`, or explicit per-step values (a sequence of floats)."""
    if weights is None or isinstance(weights, ConditionWeighting):
        return weights
    return ConditionWeighting(values=tuple(float(w) for w in weights))


def check_condition_weights(weights: Sequence[float] | None, steps: int, where: str = "") -> tuple[float, ...] | None:
    """Validate a per-step bias schedule against ``steps``; returns it as a tuple (or None)."""
    if weights is None:
        return None
    values = tuple(float(w) for w in weights)
    if len(values) != steps:
        raise ValueError(
            f"the condition weighting schedule has {len(values)} values but {where or 'the sampler'} runs {steps} "
            f"denoising steps; make the schedule with steps={steps}"
        )
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"condition weights must be finite logit biases, got {values}")
    return values


def check_local_frames(local_frames: int | None) -> int | None:
    if local_frames is None:
        return None
    if isinstance(local_frames, bool) or not isinstance(local_frames, int) or local_frames < 1:
        raise ValueError(f"local_frames must be an integer >= 1 (or None for the full window), got {local_frames!r}")
    return local_frames


_UNSET = object()


def check_stream_options(state: StreamState, *, steps: int | None, chunks: int | None) -> None:
    """Refuse, before any work, options that would fail mid-way: a source video shorter than ``chunks`` more
    chunks, a condition weighting whose explicit values do not fit the steps (ValueError naming both)."""
    if state.source is not None and chunks is not None:
        state.source.check_covers(state.latent_frames, chunks * state.settings.chunk_frames)
    if state.condition_weights is not None:
        n = len(state.step_schedule(steps))
        state.condition_weights.for_steps(n, "this stream")


def with_options(state: StreamState, *, source: SourceVideo | None | object = _UNSET,
                 condition_weights: ConditionWeighting | tuple[float, ...] | None | object = _UNSET,
                 local_frames: int | None | object = _UNSET) -> StreamState:
    """A new state with the given per-chunk options set (None turns one off; omitted ones are kept).

    ``source``: a :class:`~chameleon_core.stream_options.SourceVideo` (its ``offset`` places source frame 0 on a stream
    latent frame; chunks read the source until it ends, then generating more raises). ``condition_weights``: a
    :class:`~chameleon_core.stream_options.ConditionWeighting` or explicit values, one per step of the stream's schedule.
    ``local_frames``: >= 1 or None. The cache is
    shared with ``state`` (neither changes it: every operation clones before writing).
    """
    changes: dict = {}
    if not state.settings.conditions and (source not in (_UNSET, None) or condition_weights not in (_UNSET, None)):
        raise ValueError(
            "try-on, motion transfer and condition weighting act on the reference and garment; this stream has no "
            "conditions (a public text-/image-to-video student's profile). Use a FashionChameleon student for them"
        )
    if source is not _UNSET:
        if source is not None and not isinstance(source, SourceVideo):
            raise ValueError(f"source must be a SourceVideo or None, got {type(source).__name__}")
        if source is not None and source.latents.shape[1] != state.latent_shape[1] \
                or source is not None and tuple(source.latents.shape[3:]) != tuple(state.latent_shape[2:]):
            raise ValueError(
                f"the source video's latents {tuple(source.latents.shape)} do not match the stream's latent "
                f"{state.latent_shape} (B, C, h, w); encode the video with the stream's VAE at the stream's size"
            )
        changes["source"] = source
    if condition_weights is not _UNSET:
        weighting = as_weighting(condition_weights)
        if weighting is not None:
            weighting.for_steps(len(state.timesteps), "this stream")
        changes["condition_weights"] = weighting
    if local_frames is not _UNSET:
        changes["local_frames"] = check_local_frames(local_frames)
    return replace(state, **changes)
