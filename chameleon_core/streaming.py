"""Streaming generation with immutable stream states (``docs/design.md``: the stream state, device memory).

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

The public causal students (LongLive, Self-Forcing, CausVid) run the same loop with their own settings (chunk,
window, sink, steps, sampler: a stream profile, :mod:`chameleon_core.profiles`): without reference and garment
conditions, optionally from a first-frame image (image-to-video), with multi-shot RoPE offsets and shot sinks.

Device memory (the policy): a cache at 5B / 704p is several GB, and a workflow with a chain of switches keeps many
states alive. A :class:`~chameleon_core.residency.CacheResidency` keeps at most ``max_device_caches`` caches (default 2) on the accelerator,
least recently used first out; older ones are moved to host memory and brought back when an operation uses them.
Moving is bit-exact, so a spilled state gives the same frames as one that stayed put. The residency manager belongs
to whoever creates streams: :func:`start_stream` takes one (the node pack passes the one all its streams share), and
every state derived from a stream keeps its stream's; without one a stream gets a manager of its own.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from .cache import CacheGeometry, KVCache, Region
from .causal import prefill_conditions
from .chunk_step import ChunkInterrupted, denoise_chunk
from .config import StreamSettings
from .frames import chunks_for, stream_video_frames
from .stream_options import ConditionWeighting, SourceVideo, check_stream_options
from .memory import check_stream_memory, check_stream_sizes, estimate_stream_memory
from .model import TextContext, WanModel
from .residency import CacheResidency, CacheBox
from .schedules import StepSchedule, step_schedule, student_steps_for, student_timesteps

logger = logging.getLogger(__name__)

NOISE_MODES = ("cpu", "device")
"""Where a rollout draws its noise (see :class:`Rollout`)."""

ProgressFn = Callable[[int, int, torch.Tensor], None]
"""``progress(chunk_index, total_chunks, chunk_latents)`` called after each finished chunk."""


class NonFiniteChunkError(FloatingPointError):
    """A chunk came out NaN/inf. The state passed to :func:`generate` is unchanged and still usable."""


def check_finite_inputs(**inputs: torch.Tensor | None) -> None:
    """Raise ValueError naming each input that holds NaN/inf, before any work (one host sync for all of them).

    A NaN in a condition latent or the prompt features would otherwise surface only after a chunk was generated,
    blamed on fp16 or the weights.
    """
    named = [(k, v) for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()]
    if not named:
        return
    flags = torch.stack([torch.isfinite(v).all().to("cpu") for _, v in named]).tolist()
    bad = [k for (k, _), ok in zip(named, flags) if not ok]
    if bad:
        raise ValueError(
            f"the input(s) {', '.join(bad)} hold NaN or inf values; nothing was generated. Check what produced them: "
            "re-encode the image with the VAE (in bf16 or fp32), or encode the prompt again"
        )


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
    reference: torch.Tensor | None
    """Model-space latent ``[B, C, 1, h, w]`` whose keys fill the reference segment (None without conditions)."""
    garment: torch.Tensor | None
    """Model-space latent ``[B, C, 1, h, w]`` whose keys fill the garment segment (None without conditions)."""
    _box: CacheBox = field(repr=False)
    rng_state: torch.Tensor = field(repr=False)
    """CPU generator state for the next chunk's noise."""
    history: tuple[torch.Tensor, ...] = field(repr=False)
    """Clean model-space latents of the chunks kept, on the host, ``[B, C, chunk, h, w]`` each: every chunk so far
    with ``settings.keep_history`` (the default), else only those still in the KV cache plus the last one."""
    switches: int = 0
    """How many switches (garment or prompt) happened so far; informational."""
    history_starts: tuple[int, ...] = ()
    """First latent frame of each entry of ``history`` (they may have gaps once history is trimmed)."""
    latent_frames: int = 0
    """Latent frames generated so far (kept here because a trimmed history no longer tells); the next chunk starts
    at RoPE frame ``cond_frames + latent_frames``."""
    source: SourceVideo | None = field(default=None, repr=False)
    """A source video streamed into each chunk (try-on / motion transfer, :mod:`chameleon_core.stream_options`)."""
    condition_weights: ConditionWeighting | None = None
    """Condition weighting: a logit bias per denoising step on the reference and garment keys, or None."""
    local_frames: int | None = None
    """Frame-local attention: history frames each chunk sees besides the conditions and the sink; None = all."""
    size: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Latent shape ``(B, C, h, w)`` of the stream's frames."""
    first_frame: torch.Tensor | None = field(default=None, repr=False)
    """Image-to-video: the model-space latent ``[B, C, 1, h, w]`` the stream's frame 0 is held to (clean, t = 0)."""
    shot: int = 0
    """Shots started so far (prompt switches with ``new_shot``); moves RoPE by ``shot * settings.shot_rope_offset``."""
    pin_next: bool = False
    """The next chunk starts a shot and is pinned as the shot sink (``settings.shot_sink``)."""
    clip_starts: tuple[int, ...] = ()
    """Latent frames where a later clip of the stream began: a garment switch that withdraws every video frame from
    the cache (window and sink) starts one (:func:`~chameleon_core.rescheduling.switch_garment`). A clip's RoPE
    positions count from its start, so its first chunk is denoised where a stream's first chunk is (no video keys
    are left to stay relative to), and its first latent frame re-draws the frame before the switch (the new
    reference): the decode restarts there and does not show it (:mod:`chameleon_core.frames`). Latent frame
    numbering and the cache's bookkeeping keep counting from the stream's start."""

    # -- views --------------------------------------------------------------------------------------------------

    @property
    def cache(self) -> KVCache:
        """The KV cache, brought to the model's device. Treat it as read-only."""
        return self._box.residency.touch(self._box)

    @property
    def timesteps(self) -> tuple[float, ...]:
        """The warped denoising timesteps of the stream's steps and shift, e.g. [1000, 937.5, 833.3, 625]."""
        return self.step_schedule().timesteps

    def step_schedule(self, steps: int | None = None) -> StepSchedule:
        """The chunk schedule of the stream's settings (``steps`` overrides the step count)."""
        return step_schedule(self.settings, steps)

    @property
    def clip_start(self) -> int:
        """The latent frame where the current clip began (0: the stream's start)."""
        return self.clip_starts[-1] if self.clip_starts else 0

    @property
    def opens_clip(self) -> bool:
        """The next chunk opens a later clip (a garment switch restarted the stream here): its first latent frame is
        not shown."""
        return bool(self.clip_starts) and self.clip_starts[-1] == self.latent_frames

    @property
    def video_frames(self) -> int:
        """Video frames the stream shows so far (:func:`~chameleon_core.frames.stream_video_frames`)."""
        return stream_video_frames(0, self.latent_frames, self.clip_starts,
                                   stride=self.model.config.latent.temporal_stride)

    @property
    def rope_offset(self) -> int:
        """RoPE frames added to the next chunk's positions: the multi-shot offset of the shots so far, less the
        frames before :attr:`clip_start`."""
        return self.shot * self.settings.shot_rope_offset - self.clip_start

    @property
    def history_complete(self) -> bool:
        """True while ``history`` holds every chunk since the start (nothing trimmed)."""
        return sum(chunk.shape[2] for chunk in self.history) == self.latent_frames

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return self.size

    @property
    def next_position(self) -> int:
        return self.settings.cond_frames + self.latent_frames

    def latents(self) -> torch.Tensor:
        """All clean latents so far, model space ``[B, C, frames, h, w]`` (host).

        Raises ValueError for a stream started with ``keep_history=False`` once it has dropped chunks: the latents
        went to their consumer as they were made (the session's chunks, ``generate``'s return value).
        """
        b, c, h, w = self.latent_shape
        if not self.history_complete:
            held = ", ".join(f"{s}..{s + x.shape[2] - 1}" for s, x in zip(self.history_starts, self.history))
            raise ValueError(
                f"this stream keeps only the latents still in its KV cache (StreamSettings(keep_history=False)): "
                f"frames {held or 'none'} of {self.latent_frames}; take each segment's latents from generate() or the "
                "session as they are made, or start the stream with keep_history=True"
            )
        if not self.history:
            return torch.zeros(b, c, 0, h, w)
        return torch.cat(self.history, dim=2)

    def held_latents(self, frames: list[int]) -> torch.Tensor:
        """The clean latents of the given latent frames ``[B, C, len(frames), h, w]`` (host), from the history kept.

        Raises ValueError naming a frame the state no longer holds.
        """
        index = {s + i: (k, i) for k, s in enumerate(self.history_starts) for i in range(self.history[k].shape[2])}
        missing = [f for f in frames if f not in index]
        if missing:
            raise ValueError(
                f"latent frames {missing[:8]} are no longer held by this stream state (it keeps "
                f"{sorted(index)[:8]}...); start the stream with keep_history=True to keep every chunk"
            )
        b, c, h, w = self.latent_shape
        if not frames:
            return torch.zeros(b, c, 0, h, w)
        return torch.stack([self.history[index[f][0]][:, :, index[f][1]] for f in frames], dim=2)

    def with_cache(self, cache: KVCache, **changes) -> StreamState:
        """A new state with ``cache`` (already private to it) and the given field changes."""
        box = CacheBox(cache, self._box.home, self._box.residency)
        new = replace(self, _box=box, **changes)
        box.residency.touch(box)
        return new

    def private_cache(self) -> KVCache:
        """A copy of the cache that the caller may mutate (copy-on-write)."""
        return self.cache.clone()


def start_stream(
    model: WanModel,
    *,
    context: torch.Tensor | TextContext,
    reference: torch.Tensor | None = None,
    garment: torch.Tensor | None = None,
    seed: int = 0,
    settings: StreamSettings | None = None,
    first_frame: torch.Tensor | None = None,
    latent_size: tuple[int, int] | None = None,
    residency: CacheResidency | None = None,
) -> StreamState:
    """Start a stream: prefill the reference and garment KV and return the initial state.

    reference, garment: model-space latents ``[B, C, 1, h, w]`` (convert raw VAE latents with
    :func:`chameleon_core.latents.to_model_space`); context: prompt features ``[B, L, text_dim]``; settings:
    chunking, cache length, steps and shift (the defaults of :class:`StreamSettings` when None).

    Without conditions (``settings.conditions`` False: a public student's profile) there is no reference or garment:
    pass ``first_frame`` (a model-space ``[B, C, 1, h, w]`` latent the stream's frame 0 is held to: image-to-video)
    or ``latent_size`` (``(h, w)`` in latent pixels: text-to-video).

    ``residency``: the manager that bounds how many caches of this stream (and of others started with the same one)
    stay on the accelerator; None gives the stream one of its own.
    """
    settings = settings or StreamSettings()
    cfg = model.config
    check_seed(seed)
    if settings.conditions:
        if reference is None or garment is None:
            raise ValueError(
                "this stream takes reference and garment conditions (StreamSettings(conditions=True), "
                "FashionChameleon's student); pass reference= and garment= latents, or use the profile of a "
                "text-to-video student"
            )
        if first_frame is not None:
            raise ValueError("a first-frame image is for image-to-video profiles without conditions; this stream "
                             "takes reference and garment latents instead (drop first_frame=)")
        named = (("reference", reference), ("garment", garment))
    else:
        if reference is not None or garment is not None:
            raise ValueError(
                "this stream has no reference or garment conditions (StreamSettings(conditions=False): a public "
                "text-/image-to-video student); drop reference= and garment=, or load a FashionChameleon student"
            )
        named = (("first_frame", first_frame),) if first_frame is not None else ()
    for name, lat in named:
        if not isinstance(lat, torch.Tensor) or not lat.is_floating_point():
            got = f"dtype {lat.dtype}" if isinstance(lat, torch.Tensor) else type(lat).__name__
            raise ValueError(f"{name} must be a floating-point latent [B, C, 1, h, w], got {got}")
        if lat.ndim != 5 or lat.shape[2] != 1:
            raise ValueError(f"{name} must be a one-frame latent [B, C, 1, h, w], got shape {tuple(lat.shape)}")
        if lat.shape[1] != cfg.in_dim:
            raise ValueError(
                f"{name} latent has {lat.shape[1]} channels but the model takes {cfg.in_dim} "
                f"({cfg.latent.name} VAE); encode the images with the {cfg.latent.name} VAE"
            )
    if settings.conditions and reference.shape != garment.shape:
        raise ValueError(
            f"reference and garment latents must have the same shape, got {tuple(reference.shape)} and "
            f"{tuple(garment.shape)}; encode both at the video resolution"
        )
    if named:
        lead = named[0][1]
        batch, h, w = lead.shape[0], lead.shape[3], lead.shape[4]
        if latent_size is not None and tuple(latent_size) != (h, w):
            raise ValueError(f"latent_size {tuple(latent_size)} does not match the {named[0][0]} latent's {(h, w)}; "
                             "pass one of them")
    else:
        if latent_size is None or len(tuple(latent_size)) != 2 or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in latent_size):
            raise ValueError(
                f"a text-to-video stream needs its size: latent_size=(h, w) in latent pixels (e.g. "
                f"{cfg.latent.name}: height / {cfg.latent.spatial_stride}), got {latent_size!r}; or pass first_frame="
            )
        batch, (h, w) = 1, tuple(latent_size)
    inputs = {name: lat for name, lat in named}
    if not isinstance(context, TextContext):
        check_finite_inputs(**inputs, context=context)
    else:
        check_finite_inputs(**inputs)
    geometry = CacheGeometry(settings, cfg.tokens_per_latent_grid(h, w))
    device, dtype = model.device, model.dtype
    # Refuse before the cache exists: an oversized cache_frames / resolution would otherwise take the machine down.
    check_stream_sizes(settings, batch=batch)
    estimate = estimate_stream_memory(cfg, settings, geometry.tokens_per_frame, batch=batch, dtype=dtype,
                                      device=device)
    check_stream_memory(estimate, device, what=f"this stream ({cfg.name}, latent {h}x{w}, {settings.cache_frames} "
                        f"cache frames, batch {batch})")
    text = context if isinstance(context, TextContext) else model.prepare_text(context)
    if settings.conditions:
        reference = reference.to(device, torch.float32)
        garment = garment.to(device, torch.float32)
        cache = prefilled_cache(model, geometry, text, reference, garment)
    else:
        cache = KVCache.empty(cfg, geometry, batch=batch, device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(int(seed))
    state = StreamState(
        model=model,
        settings=settings,
        geometry=geometry,
        text=text,
        reference=reference,
        garment=garment,
        _box=CacheBox(cache, device, residency if residency is not None else CacheResidency()),
        rng_state=gen.get_state(),
        history=(),
        size=(batch, cfg.in_dim, h, w),
        first_frame=None if first_frame is None else first_frame.to(device, torch.float32),
    )
    state._box.residency.touch(state._box)
    logger.info(
        "stream started: %s, %d tokens/frame, cache %d frames (%.1f MB)%s",
        cfg.name, geometry.tokens_per_frame, geometry.slots, cache.nbytes / 2**20,
        "" if settings.conditions else (", image-to-video" if first_frame is not None else ", text-to-video"),
    )
    return state


def prefilled_cache(
    model: WanModel, geometry: CacheGeometry, text: TextContext, reference: torch.Tensor, garment: torch.Tensor
) -> KVCache:
    """A new cache of ``geometry`` with the reference and garment keys prefilled at t = 0 (no gradient: the cache
    holds detached keys). The start of every stream, and of training's distillation rollout."""
    cache = KVCache.empty(model.config, geometry, batch=reference.shape[0], device=model.device, dtype=model.dtype)
    with torch.no_grad():
        prefill_conditions(model, cache, text, reference.to(model.device, torch.float32),
                           garment.to(model.device, torch.float32))
    return cache


SEED_MAX = 2**64 - 1
"""Largest seed (a torch generator takes 64 bits; ComfyUI's seed widgets go up to it)."""


def check_seed(seed: object) -> int:
    """``seed`` if it is a whole number in 0..:data:`SEED_MAX`; raises ValueError naming it otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= SEED_MAX:
        raise ValueError(
            f"seed must be a whole number in 0..{SEED_MAX} (2**64 - 1), got {seed!r}"
            f"{'' if isinstance(seed, numbers.Integral) else f' ({type(seed).__name__})'}; pass e.g. seed=0"
        )
    return int(seed)


def schedule(steps: int, shift: float) -> tuple[float, ...]:
    """The student's warped timesteps for ``steps`` evenly spaced steps at ``shift`` (FashionChameleon's schedule;
    a stream's own is :meth:`StreamState.step_schedule`)."""
    return tuple(student_timesteps(shift, student_steps_for(steps)))


class Rollout:
    """Advances a private copy of a state's cache chunk by chunk: the loop inside :func:`generate` and the session.

    The cache is cloned once (copy-on-write), however many chunks follow; :meth:`finish` returns the new immutable
    state, after which the rollout is spent. ``steps`` overrides the stream's step count (at the stream's shift).
    ``collect`` keeps every chunk this rollout makes for :meth:`latents` (what :func:`generate` returns); without it,
    and with ``keep_history=False``, only what the next state keeps is held, so a live session's memory stays flat.

    ``noise``: ``"cpu"`` draws every noise tensor from the state's CPU generator (the reference behaviour);
    ``"device"`` draws it on the model's device from a generator seeded once per chunk from the CPU generator, so no
    host-to-device copy is needed and a seed still gives the same frames however the calls are split.
    ``clean_pass=False`` skips the t = 0 pass that writes the chunk's clean keys (see :mod:`.chunk_step`).
    ``should_stop`` is polled between denoising steps: True abandons the chunk (``step`` raises
    :class:`~.chunk_step.ChunkInterrupted` with the rollout rewound to before it).
    """

    def __init__(self, state: StreamState, *, steps: int | None = None, noise: str = "cpu", clean_pass: bool = True,
                 collect: bool = False, should_stop: Callable[[], bool] | None = None) -> None:
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}; 'cpu' is the reference behaviour")
        self.state = state
        self.schedule = state.step_schedule(steps)
        self.timesteps = self.schedule.timesteps
        weighting = state.condition_weights
        self.condition_bias = None if weighting is None else weighting.for_steps(len(self.timesteps), "this stream")
        self.noise, self.clean_pass, self.should_stop = noise, clean_pass, should_stop
        self._gen = torch.Generator().set_state(state.rng_state.clone())
        self._device_gen: torch.Generator | None = None
        self._cache: KVCache | None = state.private_cache()
        self._history = list(state.history)
        self._starts = list(state.history_starts)
        self._collect = collect
        self._new: list[torch.Tensor] = []
        self._made = 0
        self.latent_frames = state.latent_frames
        """Latent frames of the stream including this rollout's chunks."""
        self._pin_next = state.pin_next

    def _noise(self, _step: int) -> torch.Tensor:
        b, ch, h, w = self.state.latent_shape
        shape = (b, ch, self.state.settings.chunk_frames, h, w)
        device = self.state.model.device
        if self._device_gen is not None:
            return torch.randn(shape, generator=self._device_gen, device=device)
        return torch.randn(shape, generator=self._gen).to(device)

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Generate the next chunk; returns its clean model-space latents ``[B, C, chunk, h, w]`` (model device)."""
        if self._cache is None:
            raise RuntimeError("this rollout has finished; continue from the state finish() returned")
        state, c, cache = self.state, self.state.settings.chunk_frames, self._cache
        window_head, rng = cache.window_head, self._gen.get_state()
        source = None
        if state.source is not None:
            # each later clip's first latent frame re-draws the frame before it: from there on, stream latent frame
            # j shows the video frames of source latent frame j - (clips started at or before j)
            behind = sum(1 for start in state.clip_starts if start <= self.latent_frames)
            source = state.source.chunk(self.latent_frames - behind, c, self.timesteps, state.model.device)
        # 1. Claim the chunk's slots (evicts the oldest history frames once the window is full).
        window_pins = cache.pinned
        slots = cache.reserve(c, state.settings.cond_frames + self.latent_frames)
        try:
            if self.noise == "device":
                seed = int(torch.randint(0, 2**62, (), generator=self._gen))  # the CPU generator carries the stream
                self._device_gen = torch.Generator(device=state.model.device).manual_seed(seed)
            # 2-3. Few-step denoising, then the clean pass that writes the chunk's keys (the shared chunk step).
            clean = state.first_frame if self.latent_frames == 0 else None  # image-to-video: frame 0 is the image
            x0 = denoise_chunk(state.model, cache, state.text, slots, self.schedule, self._noise,
                               clean_pass=self.clean_pass, source=source, condition_bias=self.condition_bias,
                               local_frames=state.local_frames, should_stop=self.should_stop, clean_frames=clean,
                               rope_offset=state.rope_offset)
            if not bool(torch.isfinite(x0).all()):  # one host sync per chunk, not per layer
                raise NonFiniteChunkError(
                    f"chunk {self._made} (latent frames {self.latent_frames}..{self.latent_frames + c - 1}) contains NaN/inf. The "
                    "last complete stream state is kept. Likely causes: fp16 overflow (use bf16 or fp32), or corrupt "
                    "weights"
                )
        except BaseException:
            # Any failure (NaN, out of memory, an interrupt) leaves the rollout as it was before this chunk: the
            # claimed slots are emptied (the frames they held were being evicted by this chunk anyway), the window
            # and the noise generator rewind, so finish() is the last complete state and a retry gives the frames
            # of an unfailed run.
            for slot in slots:
                cache.positions[slot] = None
            cache.window_head, cache.pinned = window_head, window_pins
            self._gen.set_state(rng)
            raise
        if self._pin_next:  # the first chunk of a new shot stays beside the sink (LongLive 2.0's multi-shot sink)
            cache.pin(slots[: min(c, state.settings.sink_frames)])
            self._pin_next = False
        host = x0.cpu() if x0.device.type != "cpu" else x0.clone()  # never share storage with what is handed out
        self._history.append(host)
        self._starts.append(self.latent_frames)
        if self._collect:
            self._new.append(host)
        self.latent_frames += c
        self._made += 1
        if not state.settings.keep_history:
            self._trim()
        return x0

    def _trim(self) -> None:
        """Keep the chunks with a frame still in the cache's sink or window (a prompt switch re-caches them) and the
        last chunk; drop the rest (bounded memory for an endless stream)."""
        cache, geo = self._cache, self.state.geometry
        held = {
            cache.positions[s] - self.state.settings.cond_frames
            for region in (Region.SINK, Region.WINDOW)
            for s in geo.region_slots(region)
            if cache.positions[s] is not None
        }
        keep = [
            k for k, (start, x) in enumerate(zip(self._starts, self._history))
            if k == len(self._history) - 1 or any(start + i in held for i in range(x.shape[2]))
        ]  # fmt: skip
        if len(keep) != len(self._history):
            self._history = [self._history[k] for k in keep]
            self._starts = [self._starts[k] for k in keep]

    def finish(self) -> StreamState:
        """The state after the chunks generated so far (the input state if none)."""
        if self._cache is None:
            raise RuntimeError("this rollout has finished already")
        cache, self._cache = self._cache, None
        if not self._made:
            return self.state
        return self.state.with_cache(cache, rng_state=self._gen.get_state(), history=tuple(self._history),
                                     history_starts=tuple(self._starts), latent_frames=self.latent_frames,
                                     pin_next=self._pin_next)

    def latents(self) -> torch.Tensor:
        """This rollout's clean latents so far ``[B, C, n, h, w]`` (host); needs ``collect=True``."""
        if not self._collect:
            raise RuntimeError("Rollout.latents() needs Rollout(..., collect=True); the session hands chunks over one by one")
        b, ch, h, w = self.state.latent_shape
        return torch.cat(self._new, dim=2) if self._new else torch.zeros(b, ch, 0, h, w)


def generate(
    state: StreamState,
    latent_frames: int,
    *,
    steps: int | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    noise: str = "cpu",
    clean_pass: bool = True,
) -> tuple[StreamState, torch.Tensor]:
    """Generate ``latent_frames`` more frames (rounded up to whole chunks); returns ``(state', latents)``.

    ``latents`` are the new clean model-space latents ``[B, C, n, h, w]`` (host). ``steps`` overrides the stream's
    step count for this call (at the stream's shift). A non-finite chunk raises :class:`NonFiniteChunkError`;
    ``state`` itself is never modified.

    Interrupt contract (the same for every loop of the core: this one, the session loop, the teacher samplers,
    streaming decode): ``should_stop()`` is polled between units of work; once it returns True the loop stops and
    returns what it completed -- here the finished chunks and the matching state -- and never raises. A caller that
    must report the stop (a node, the command line) asks its own ``should_stop`` afterwards.

    ``noise`` (``"cpu"`` / ``"device"``) and ``clean_pass``: see :class:`Rollout`.
    """
    n_chunks = chunks_for(state, latent_frames)
    check_stream_options(state, steps=steps, chunks=n_chunks)
    rollout = Rollout(state, steps=steps, noise=noise, clean_pass=clean_pass, collect=True, should_stop=should_stop)
    for k in range(n_chunks):
        if should_stop is not None and should_stop():
            logger.info("stream interrupted after %d of %d chunks", k, n_chunks)
            break
        try:
            x0 = rollout.step()
        except ChunkInterrupted as e:  # mid-chunk: the rollout rewound; the finished chunks are the result
            logger.info("stream interrupted in chunk %d of %d (%s)", k + 1, n_chunks, e)
            break
        if progress is not None:
            progress(k, n_chunks, x0)
    latents = rollout.latents()
    return rollout.finish(), latents


def cached_frames(state: StreamState) -> list[tuple[list[int], list[int]]]:
    """The video frames held in the sink and window, grouped by chunk in time order: ``[(slots, positions)]``."""
    cache = state.cache
    geo, c, cond = state.geometry, state.settings.chunk_frames, state.settings.cond_frames
    held = [
        (cache.positions[s], s)
        for seg in (Region.SINK, Region.WINDOW)
        for s in geo.region_slots(seg)
        if cache.positions[s] is not None
    ]
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for pos, slot in sorted(held):
        chunk = (pos - cond) // c
        groups.setdefault(chunk, ([], []))
        groups[chunk][0].append(slot)
        groups[chunk][1].append(pos)
    return [groups[k] for k in sorted(groups)]
