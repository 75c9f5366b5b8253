"""Streaming generation with immutable stream states (DESIGN.md section 4).

A :class:`StreamState` is an immutable snapshot of one stream: model handle, prompt, condition latents, KV cache,
frame counter, RNG state and the clean latents generated so far. Operations return a new state and never change
their input -- ComfyUI caches node outputs by reference and hands the same object to the next run, so a mutated
input would corrupt the cached upstream output. Each operation clones the cache once (copy-on-write) and works on
the clone.

The autoregressive loop (:func:`generate`) reads top to bottom, as in Self-Forcing / the authors'
``stream_wan22_ic_inference.py``:

1. claim cache slots for the next chunk (the FIFO window evicts its oldest frames here);
2. denoise the chunk with the few-step schedule ([1000, 937.5, 833.3, 625] at shift 5): predict x0, re-noise to
   the next step with fresh noise; the last x0 is the chunk;
3. run the clean chunk once more at t = 0 (the "clean pass") so the cache holds the keys later chunks read.

Device memory (the policy): a cache at 5B / 704p is several GB, and a workflow with a chain of switches keeps many
states alive. A process-wide :class:`CacheResidency` keeps at most ``max_device_caches`` caches (default 2) on the
accelerator, least recently used first out; older ones are moved to host memory and brought back when an operation
uses them. Moving is bit-exact, so a spilled state gives the same frames as one that stayed put.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .cache import CacheGeometry, KVCache, Region
from .causal import prefill_conditions
from .chunk_step import denoise_chunk
from .config import COND_FRAMES, StreamSettings
from .model import TextContext, WanModel
from .schedules import student_steps_for, student_timesteps

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, torch.Tensor], None]
"""``progress(chunk_index, total_chunks, chunk_latents)`` called after each finished chunk."""


class NonFiniteChunkError(FloatingPointError):
    """A chunk came out NaN/inf. The state passed to :func:`generate` is unchanged and still usable."""


# -------------------------------------------------------------------------------------------------------------
# Residency: bounded device memory for many live states
# -------------------------------------------------------------------------------------------------------------


class _CacheBox:
    """Holds a state's cache; the residency manager may swap its storage between device and host."""

    def __init__(self, cache: KVCache, home: torch.device) -> None:
        self.cache = cache
        self.home = home


class CacheResidency:
    """Keeps at most ``max_device_caches`` stream caches on their accelerator; spills the rest to host memory."""

    def __init__(self, max_device_caches: int = 2) -> None:
        self.max_device_caches = max_device_caches
        self._lru: list[weakref.ref[_CacheBox]] = []
        self._lock = threading.Lock()

    def touch(self, box: _CacheBox) -> KVCache:
        """Mark ``box`` most recently used, bring it to its device, spill the least recently used beyond budget."""
        with self._lock:
            live = [b for b in (r() for r in self._lru) if b is not None and b is not box] + [box]
            self._lru = [weakref.ref(b) for b in live]
            if box.cache.device != box.home:
                logger.debug("bringing a stream cache back to %s", box.home)
                box.cache = box.cache.to(box.home)
            on_device = [b for b in live if b.home.type != "cpu" and b.cache.device.type != "cpu"]
            for old in on_device[: max(0, len(on_device) - self.max_device_caches)]:
                logger.debug("spilling a stream cache (%.1f MB) to host", old.cache.nbytes / 2**20)
                old.cache = old.cache.to("cpu", non_blocking=False)
            return box.cache

    def resident(self) -> int:
        """How many tracked caches currently sit on an accelerator."""
        with self._lock:
            return sum(1 for r in self._lru if r() is not None and r().cache.device.type != "cpu")


RESIDENCY = CacheResidency()


# -------------------------------------------------------------------------------------------------------------
# The state
# -------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class StreamState:
    """Immutable snapshot of one stream. Build with :func:`start_stream`; advance with :func:`generate`."""

    model: WanModel
    settings: StreamSettings
    """Chunking, cache length, steps and shift the stream was started with."""
    geometry: CacheGeometry
    text: TextContext
    """Cross-attention K/V of the current prompt."""
    reference: torch.Tensor
    """Model-space latent ``[B, C, 1, h, w]`` whose keys fill the reference segment."""
    garment: torch.Tensor
    """Model-space latent ``[B, C, 1, h, w]`` whose keys fill the garment segment."""
    _box: _CacheBox = field(repr=False)
    rng_state: torch.Tensor = field(repr=False)
    """CPU generator state for the next chunk's noise."""
    history: tuple[torch.Tensor, ...] = field(repr=False)
    """Clean model-space latents of every chunk so far, on the host, ``[B, C, chunk, h, w]`` each."""
    switches: int = 0
    """How many switches (garment or prompt) happened so far; informational."""

    # -- views --------------------------------------------------------------------------------------------------

    @property
    def cache(self) -> KVCache:
        """The KV cache, brought to the model's device. Treat it as read-only."""
        return RESIDENCY.touch(self._box)

    @property
    def timesteps(self) -> tuple[float, ...]:
        """The warped denoising timesteps of the stream's steps and shift, e.g. [1000, 937.5, 833.3, 625]."""
        return schedule(self.settings.steps, self.settings.shift)

    @property
    def frames(self) -> int:
        """Video latent frames generated so far; the next chunk starts at RoPE frame ``2 + frames``."""
        return sum(chunk.shape[2] for chunk in self.history)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        b, c, _, h, w = self.reference.shape
        return b, c, h, w

    @property
    def next_position(self) -> int:
        return COND_FRAMES + self.frames

    def latents(self) -> torch.Tensor:
        """All clean latents so far, model space ``[B, C, frames, h, w]`` (host)."""
        b, c, h, w = self.latent_shape
        if not self.history:
            return torch.zeros(b, c, 0, h, w)
        return torch.cat(self.history, dim=2)

    def with_cache(self, cache: KVCache, **changes) -> StreamState:
        """A new state with ``cache`` (already private to it) and the given field changes."""
        box = _CacheBox(cache, self._box.home)
        new = replace(self, _box=box, **changes)
        RESIDENCY.touch(box)
        return new

    def private_cache(self) -> KVCache:
        """A copy of the cache that the caller may mutate (copy-on-write)."""
        return self.cache.clone()


def start_stream(
    model: WanModel,
    *,
    context: torch.Tensor | TextContext,
    reference: torch.Tensor,
    garment: torch.Tensor,
    seed: int = 0,
    settings: StreamSettings | None = None,
) -> StreamState:
    """Start a stream: prefill the reference and garment KV and return the initial state.

    reference, garment: model-space latents ``[B, C, 1, h, w]`` (convert raw VAE latents with
    :func:`chameleon_core.latents.to_model_space`); context: prompt features ``[B, L, text_dim]``; settings:
    chunking, cache length, steps and shift (the defaults of :class:`StreamSettings` when None).
    """
    settings = settings or StreamSettings()
    cfg = model.config
    for name, lat in (("reference", reference), ("garment", garment)):
        if lat.ndim != 5 or lat.shape[2] != 1:
            raise ValueError(f"{name} must be a one-frame latent [B, C, 1, h, w], got shape {tuple(lat.shape)}")
        if lat.shape[1] != cfg.in_dim:
            raise ValueError(
                f"{name} latent has {lat.shape[1]} channels but the model takes {cfg.in_dim} "
                f"({cfg.latent.name} VAE); encode the images with the {cfg.latent.name} VAE"
            )
    if reference.shape != garment.shape:
        raise ValueError(
            f"reference and garment latents must have the same shape, got {tuple(reference.shape)} and "
            f"{tuple(garment.shape)}; encode both at the video resolution"
        )
    _, _, _, h, w = reference.shape
    geometry = CacheGeometry(settings, cfg.tokens_per_latent_grid(h, w))
    device, dtype = model.device, model.dtype
    text = context if isinstance(context, TextContext) else model.prepare_text(context)
    reference = reference.to(device, torch.float32)
    garment = garment.to(device, torch.float32)
    cache = KVCache.empty(cfg, geometry, batch=reference.shape[0], device=device, dtype=dtype)
    with torch.no_grad():
        prefill_conditions(model, cache, text, reference, garment)
    gen = torch.Generator().manual_seed(int(seed))
    state = StreamState(
        model=model,
        settings=settings,
        geometry=geometry,
        text=text,
        reference=reference,
        garment=garment,
        _box=_CacheBox(cache, device),
        rng_state=gen.get_state(),
        history=(),
    )
    RESIDENCY.touch(state._box)
    logger.info(
        "stream started: %s, %d tokens/frame, cache %d frames (%.1f MB)",
        cfg.name, geometry.tokens_per_frame, geometry.slots, cache.nbytes / 2**20,
    )
    return state


def chunks_for(state: StreamState, latent_frames: int) -> int:
    """Number of chunks needed for ``latent_frames`` (rounded up to whole chunks, at least one)."""
    c = state.settings.chunk_frames
    if latent_frames < 1:
        raise ValueError(f"frames must be at least one chunk ({c} latent frames), got {latent_frames}")
    return -(-latent_frames // c)


def latent_frames_for(state: StreamState, video_frames: int) -> int:
    """Latent frames to generate for ``video_frames`` more video frames from ``state``.

    The causal VAE decodes the stream's first latent frame to one video frame and every later one to
    ``temporal_stride`` (4): the first segment takes ``(frames - 1) // 4 + 1`` latent frames, a later one
    ``ceil(frames / 4)``. :func:`generate` then rounds up to whole chunks. Fewer video frames than one chunk shows
    raise ValueError (naming the minimum).
    """
    family, c = state.model.config.latent, state.settings.chunk_frames
    first = state.frames == 0
    one_chunk = family.pixel_frames(c) if first else c * family.temporal_stride
    if video_frames < one_chunk:
        raise ValueError(
            f"{video_frames} video frames are fewer than one chunk ({c} latent frames = {one_chunk} video frames "
            f"{'at the start of a stream' if first else 'after the start'}); use at least {one_chunk}"
        )
    return family.latent_frames(video_frames) if first else -(-video_frames // family.temporal_stride)


def schedule(steps: int, shift: float) -> tuple[float, ...]:
    """The student's warped timesteps for ``steps`` evenly spaced steps at ``shift``."""
    return tuple(student_timesteps(shift, student_steps_for(steps)))


class Rollout:
    """Advances a private copy of a state's cache chunk by chunk: the loop inside :func:`generate` and the session.

    The cache is cloned once (copy-on-write), however many chunks follow; :meth:`finish` returns the new immutable
    state, after which the rollout is spent. ``steps`` overrides the stream's step count (at the stream's shift).
    """

    def __init__(self, state: StreamState, *, steps: int | None = None) -> None:
        self.state = state
        self.timesteps = state.timesteps if steps is None else schedule(steps, state.settings.shift)
        self._gen = torch.Generator().set_state(state.rng_state.clone())
        self._cache: KVCache | None = state.private_cache()
        self._new: list[torch.Tensor] = []
        self.frames = state.frames
        """Video latent frames of the stream including this rollout's chunks."""

    def _noise(self, _step: int) -> torch.Tensor:
        b, ch, h, w = self.state.latent_shape
        return torch.randn(b, ch, self.state.settings.chunk_frames, h, w, generator=self._gen).to(self.state.model.device)

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Generate the next chunk; returns its clean model-space latents ``[B, C, chunk, h, w]`` (model device)."""
        if self._cache is None:
            raise RuntimeError("this rollout has finished; continue from the state finish() returned")
        state, c = self.state, self.state.settings.chunk_frames
        # 1. Claim the chunk's slots (evicts the oldest history frames once the window is full).
        slots = self._cache.reserve(c, COND_FRAMES + self.frames)
        # 2-3. Few-step denoising, then the clean pass that writes the chunk's keys (the shared chunk step).
        x0 = denoise_chunk(state.model, self._cache, state.text, slots, self.timesteps, self._noise)
        if not bool(torch.isfinite(x0).all()):  # one host sync per chunk, not per layer
            self._cache = None
            raise NonFiniteChunkError(
                f"chunk {len(self._new)} (latent frames {self.frames}..{self.frames + c - 1}) contains NaN/inf. The "
                "input stream state is unchanged. Likely causes: fp16 overflow (use bf16 or fp32), or corrupt weights"
            )
        self.frames += c
        self._new.append(x0.cpu())
        return x0

    def finish(self) -> StreamState:
        """The state after the chunks generated so far (the input state if none)."""
        if self._cache is None:
            raise RuntimeError("this rollout has finished already")
        cache, self._cache = self._cache, None
        if not self._new:
            return self.state
        return self.state.with_cache(cache, rng_state=self._gen.get_state(), history=self.state.history + tuple(self._new))

    def latents(self) -> torch.Tensor:
        """This rollout's clean latents so far ``[B, C, n, h, w]`` (host)."""
        b, ch, h, w = self.state.latent_shape
        return torch.cat(self._new, dim=2) if self._new else torch.zeros(b, ch, 0, h, w)


def generate(
    state: StreamState,
    latent_frames: int,
    *,
    steps: int | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[StreamState, torch.Tensor]:
    """Generate ``latent_frames`` more frames (rounded up to whole chunks); returns ``(state', latents)``.

    ``latents`` are the new clean model-space latents ``[B, C, n, h, w]`` (host). ``steps`` overrides the stream's
    step count for this call (at the stream's shift). A non-finite chunk raises :class:`NonFiniteChunkError`;
    ``state`` itself is never modified.

    Interrupt contract (the same for every loop of the core: this one, the session loop, the teacher samplers,
    streaming decode): ``should_stop()`` is polled between units of work; once it returns True the loop stops and
    returns what it completed -- here the finished chunks and the matching state -- and never raises. A caller that
    must report the stop (a node, the command line) asks its own ``should_stop`` afterwards.
    """
    n_chunks = chunks_for(state, latent_frames)
    rollout = Rollout(state, steps=steps)
    for k in range(n_chunks):
        if should_stop is not None and should_stop():
            logger.info("stream interrupted after %d of %d chunks", k, n_chunks)
            break
        x0 = rollout.step()
        if progress is not None:
            progress(k, n_chunks, x0)
    latents = rollout.latents()
    return rollout.finish(), latents


def cached_frames(state: StreamState) -> list[tuple[list[int], list[int]]]:
    """The video frames held in the sink and window, grouped by chunk in time order: ``[(slots, positions)]``."""
    cache = state.cache
    geo, c = state.geometry, state.settings.chunk_frames
    held = [
        (cache.positions[s], s)
        for seg in (Region.SINK, Region.WINDOW)
        for s in geo.region_slots(seg)
        if cache.positions[s] is not None
    ]
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for pos, slot in sorted(held):
        chunk = (pos - COND_FRAMES) // c
        groups.setdefault(chunk, ([], []))
        groups[chunk][0].append(slot)
        groups[chunk][1].append(pos)
    return [groups[k] for k in sorted(groups)]
