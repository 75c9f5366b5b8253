"""The typed KV cache of the streaming student (``docs/kv_cache.md``; FashionChameleon section 3.3).

Layout, in latent frames (each frame is ``tokens_per_frame`` tokens; with the defaults, 23 frames):

    slot:     0           1            2 .. 4           5 .. 22
    region:   reference | garment    | sink           | FIFO history window (includes the chunk being generated)
    RoPE pos: 0         | 1          | 2 .. 4 (chunk 0) | grows forever: 2 + 3k .. 4 + 3k for chunk k

- Keys are stored *after* RoPE, at the absolute frame position they were computed at, and never re-indexed (as in
  the authors' code). So the order of slots inside the window does not matter to attention, and the window is a
  ring: a new chunk overwrites the oldest history frames, which is the authors' "drop the oldest non-sink chunk and
  shift left" without moving any memory.
- Per layer, keys and values live in one preallocated tensor ``[layers, B, slots * tokens_per_frame, H, D]``.
  Slot bookkeeping (which slot holds which frame position) is plain Python ints, so a forward never calls
  ``.item()`` or otherwise syncs with the device.
- A query chunk attends to every filled slot whose frame position is <= its own last frame. While streaming, the
  filled slots form a prefix of the storage, so attention reads one contiguous slice and needs no mask. This is the
  block-causal in-context mask (conditions attend to each other; chunk k to the conditions, earlier chunks and
  itself), restricted to sink + window once eviction starts.
- Cross-attention K/V for the prompt are kept beside it (:class:`~chameleon_core.model.TextContext`).
- Without conditions (``StreamSettings(conditions=False)``: the public text-/image-to-video students) the reference
  and garment regions are empty, the sink starts at slot 0 and video frame k sits at RoPE frame k.
- Pinned slots (LongLive 2.0's multi-shot sink, :meth:`KVCache.pin`) are never evicted; while any slot is pinned, a
  new frame overwrites the window frame with the oldest position among the unpinned ones (without pins that is the
  ring's next slot, the code path kept as it was).

A :class:`KVCache` is mutable storage. Immutability of stream *states* is built on top of it
(``chameleon_core.streaming``): an operation clones the cache once, works on the clone, and returns a new state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum

import torch

from .attention import SDPA, AttentionBackend, attention, attention_with_key_bias, condition_key_bias
from .config import StreamSettings, WanConfig

logger = logging.getLogger(__name__)


class Region(str, Enum):
    REFERENCE = "reference"
    GARMENT = "garment"
    SINK = "sink"
    WINDOW = "window"


@dataclass(frozen=True)
class CacheGeometry:
    """Sizes of a cache, derived from the stream config and the resolution (never literals)."""

    settings: StreamSettings
    tokens_per_frame: int
    """Tokens per latent frame (880 for Wan2.2 at 1280x704; 1560 for Wan2.1 at 832x480)."""

    @staticmethod
    def for_resolution(config: WanConfig, settings: StreamSettings, height: int, width: int) -> CacheGeometry:
        return CacheGeometry(settings, config.tokens_per_frame(height, width))

    @property
    def slots(self) -> int:
        return self.settings.cache_frames

    @property
    def capacity_tokens(self) -> int:
        return self.slots * self.tokens_per_frame

    def region_slots(self, region: Region) -> range:
        s = self.settings
        cond = s.cond_frames
        start = {Region.REFERENCE: 0, Region.GARMENT: min(1, cond), Region.SINK: cond,
                 Region.WINDOW: cond + s.sink_frames}
        one = 1 if cond else 0
        size = {Region.REFERENCE: one, Region.GARMENT: one, Region.SINK: s.sink_frames, Region.WINDOW: s.window_frames}
        return range(start[region], start[region] + size[region])

    def token_range(self, slot: int, count: int = 1) -> slice:
        t = self.tokens_per_frame
        return slice(slot * t, (slot + count) * t)

    def nbytes(self, config: WanConfig, batch: int, dtype: torch.dtype) -> int:
        per = config.num_layers * batch * self.capacity_tokens * config.dim
        return 2 * per * torch.empty((), dtype=dtype).element_size()


@dataclass
class KVCache:
    """Self-attention keys/values of every layer, in named regions. See the module docstring for the layout."""

    geometry: CacheGeometry
    k: torch.Tensor
    """``[layers, B, slots * tokens_per_frame, H, D]``, after RoPE."""
    v: torch.Tensor
    """``[layers, B, slots * tokens_per_frame, H, D]``."""
    positions: list[int | None] = field(default_factory=list)
    """RoPE frame position held by each slot, or None when the slot is empty."""
    window_head: int = 0
    """Next window slot (relative to the window's start) that a new frame overwrites."""
    pinned: tuple[int, ...] = ()
    """Window slots that are never evicted (a shot sink, :meth:`pin`); empty in FashionChameleon's streams."""

    # -- construction -------------------------------------------------------------------------------------------

    @staticmethod
    def empty(
        config: WanConfig,
        geometry: CacheGeometry,
        *,
        batch: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> KVCache:
        shape = (config.num_layers, batch, geometry.capacity_tokens, config.num_heads, config.head_dim)
        logger.debug("allocating KV cache %s (%.1f MB)", shape, geometry.nbytes(config, batch, dtype) / 2**20)
        return KVCache(
            geometry,
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype),
            [None] * geometry.slots,
        )

    def clone(self) -> KVCache:
        """An independent copy (device memory doubles until one of the two is dropped)."""
        return KVCache(self.geometry, self.k.clone(), self.v.clone(), list(self.positions), self.window_head,
                       self.pinned)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> KVCache:
        """The same cache with storage on ``device`` (spilling to host or bringing back); bookkeeping is shared."""
        if self.k.device == torch.device(device):
            return self
        k = self.k.to(device, non_blocking=non_blocking)
        v = self.v.to(device, non_blocking=non_blocking)
        return KVCache(self.geometry, k, v, list(self.positions), self.window_head, self.pinned)

    @property
    def device(self) -> torch.device:
        return self.k.device

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2

    # -- bookkeeping --------------------------------------------------------------------------------------------

    def region_positions(self, region: Region) -> list[int | None]:
        return [self.positions[s] for s in self.geometry.region_slots(region)]

    def filled_slots(self) -> list[int]:
        return [s for s, p in enumerate(self.positions) if p is not None]

    def frame_count(self, region: Region) -> int:
        return sum(p is not None for p in self.region_positions(region))

    def clear(self, *regions: Region) -> None:
        """Forget the frames of ``regions`` (their storage is simply overwritten later)."""
        for region in regions:
            for s in self.geometry.region_slots(region):
                self.positions[s] = None
            if region is Region.WINDOW:
                self.window_head = 0
                self.pinned = ()

    def reserve(self, frames: int, position: int) -> list[int]:
        """Claim slots for ``frames`` new video frames at RoPE positions ``position ..``; returns the slots.

        The sink fills first (the first chunk after the conditions, or after a withdraw that dropped the sink);
        after that, frames go into the FIFO window, overwriting the oldest history frames. This is where eviction
        happens: it occurs *before* the chunk is denoised, as in the authors' rolling cache.
        """
        if self.geometry.settings.conditions and (self.positions[0] is None or self.positions[1] is None):
            raise RuntimeError("prefill the reference and garment before generating video frames")
        window = self.geometry.region_slots(Region.WINDOW)
        slots = []
        for i in range(frames):
            free_sink = [s for s in self.geometry.region_slots(Region.SINK) if self.positions[s] is None]
            if free_sink and self.frame_count(Region.WINDOW) == 0:
                slot = free_sink[0]
            elif self.pinned:
                slot = self._oldest_unpinned(window, slots)
            else:
                slot = window.start + self.window_head
                self.window_head = (self.window_head + 1) % len(window)
            if slot in slots:
                raise ValueError(
                    f"a chunk of {frames} frames does not fit the history window of {len(window)} frames; "
                    f"use a chunk of at most {len(window)} frames or a larger cache_frames"
                )
            self.positions[slot] = position + i
            slots.append(slot)
        return slots

    def _oldest_unpinned(self, window: range, taken: list[int]) -> int:
        """The window slot a new frame takes while slots are pinned: an empty one, else the unpinned frame with the
        oldest position (LongLive 2.0 rolls the unprotected part of its cache, oldest out first)."""
        free = [s for s in window if s not in self.pinned and s not in taken]
        if not free:
            raise ValueError(
                f"a chunk does not fit the history window of {len(window)} frames beside the {len(self.pinned)} "
                "pinned shot-sink frames; raise cache_frames"
            )
        return min(free, key=lambda s: (self.positions[s] is not None, self.positions[s] or 0))

    def pin(self, slots: list[int]) -> None:
        """Keep these window slots (a new shot's first chunk) until the next :meth:`pin` replaces them."""
        window = self.geometry.region_slots(Region.WINDOW)
        if any(s not in window for s in slots):
            raise ValueError(f"only history-window slots can be pinned, got {slots}")
        self.pinned = tuple(sorted(slots))

    def assign(self, region: Region, position: int) -> list[int]:
        """Claim the single slot of the reference or garment region for a frame at ``position``."""
        if region not in (Region.REFERENCE, Region.GARMENT):
            raise ValueError(f"assign() is for the reference or garment region, got {region}")
        (slot,) = self.geometry.region_slots(region)
        self.positions[slot] = position
        return [slot]

    # -- attention ----------------------------------------------------------------------------------------------

    def plan(self, slots: list[int], *, condition_bias: float | None = None,
             local_frames: int | None = None) -> CachedAttention:
        """A :class:`~chameleon_core.attention.SelfAttentionPlan` for a forward over video frames in ``slots``.

        The run's keys/values are stored in those (already claimed) slots layer by layer, then the run attends to
        every filled slot at a frame position <= its own last frame. Options (None: off, the plain path):
        ``condition_bias`` adds a logit bias to the reference and garment keys; ``local_frames`` keeps, of the
        history window, only the frames within ``local_frames`` positions before the run's first frame (the
        conditions, the sink and the run itself stay visible).
        """
        return CachedAttention(self, slots, condition_bias=condition_bias, local_frames=local_frames)

    def condition_plan(self, slots: list[int | None]) -> ConditionPrefill:
        """Plan for a forward over condition frames: they attend to each other only; frame i is stored in
        ``slots[i]`` unless that is None (a refresh keeps one condition's old keys)."""
        return ConditionPrefill(self, slots)


def _pieces(slots: list[int | None]) -> list[tuple[int, int, int]]:
    """Group a run's frames into contiguous ``(dst slot, src frame, count)`` copies, skipping None."""
    pieces: list[tuple[int, int, int]] = []
    for i, slot in enumerate(slots):
        if slot is None:
            continue
        if pieces and pieces[-1][0] + pieces[-1][2] == slot and pieces[-1][1] + pieces[-1][2] == i:
            d, s, n = pieces[-1]
            pieces[-1] = (d, s, n + 1)
        else:
            pieces.append((slot, i, 1))
    return pieces


def _store(cache: KVCache, layer: int, pieces: list[tuple[int, int, int]], k: torch.Tensor, v: torch.Tensor) -> None:
    _splice(cache.geometry.tokens_per_frame, pieces, cache.k[layer], cache.v[layer], k, v)


def _splice(
    tpf: int, pieces: list[tuple[int, int, int]], ck: torch.Tensor, cv: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> None:
    """Copy a run's keys/values ``[B, L, H, D]`` into slot storage ``ck, cv [B, S, H, D]`` (in place)."""
    for dst, src, n in pieces:
        ck[:, dst * tpf : (dst + n) * tpf] = k[:, src * tpf : (src + n) * tpf]
        cv[:, dst * tpf : (dst + n) * tpf] = v[:, src * tpf : (src + n) * tpf]


class CachedAttention:
    """Self-attention plan for video frames: store this run's K/V in its slots, then attend over visible slots."""

    def __init__(self, cache: KVCache, slots: list[int], *, condition_bias: float | None = None,
                 local_frames: int | None = None) -> None:
        if any(cache.positions[s] is None for s in slots):
            raise RuntimeError(f"slots {slots} must be claimed with reserve() before a cached forward")
        self.cache = cache
        self.pieces = _pieces(list(slots))
        last = max(cache.positions[s] for s in slots)
        visible = [p is not None and p <= last for p in cache.positions]
        self.key_index: torch.Tensor | None = None
        if local_frames is not None:
            visible = self._local(visible, slots, local_frames)
        n_visible = sum(visible)
        if all(visible[:n_visible]):
            # Streaming: the visible slots are a prefix of storage -> one slice, no mask.
            self.key_end = n_visible * cache.geometry.tokens_per_frame
            self.key_mask = None
        else:
            # Re-caching after a prompt switch walks the ring in time order: mask out later (stale) slots.
            self.key_end = cache.geometry.capacity_tokens
            mask = torch.tensor(visible, device=cache.device)
            self.key_mask = mask.repeat_interleave(cache.geometry.tokens_per_frame)[None, None, None, :]
        if local_frames is not None and self.key_mask is not None:
            # Frame-local attention is a speed option: gather the visible keys instead of masking the whole ring.
            tpf = cache.geometry.tokens_per_frame
            rows = [s * tpf + i for s, vis in enumerate(visible) if vis for i in range(tpf)]
            self.key_index = torch.tensor(rows, device=cache.device)
            self.key_mask = None
        self.key_bias: torch.Tensor | None = None
        if condition_bias is not None and not cache.geometry.settings.conditions:
            raise ValueError("condition weighting needs a stream with reference and garment conditions; this stream "
                             "has none (a text-/image-to-video profile)")
        if condition_bias is not None:  # the reference and garment slots (0, 1) are the first keys in every layout
            key_len = len(self.key_index) if self.key_index is not None else self.key_end
            self.key_bias = condition_key_bias(condition_bias, 2 * cache.geometry.tokens_per_frame, key_len,
                                               cache.device)

    def _local(self, visible: list[bool], slots: list[int], local_frames: int) -> list[bool]:
        """``visible`` restricted to the conditions, the sink, the run's own slots and the ``local_frames`` frames
        before the run's first frame."""
        if local_frames < 1:
            raise ValueError(f"local_frames must be >= 1 (or None for the full window), got {local_frames}")
        geo, positions = self.cache.geometry, self.cache.positions
        first = min(positions[s] for s in slots)
        keep = set(geo.region_slots(Region.REFERENCE)) | set(geo.region_slots(Region.GARMENT))
        keep |= set(geo.region_slots(Region.SINK)) | set(slots)
        return [vis and (s in keep or positions[s] >= first - local_frames) for s, vis in enumerate(visible)]

    def _attend_option(self, q: torch.Tensor, ck: torch.Tensor, cv: torch.Tensor,
                       backend: AttentionBackend) -> torch.Tensor:
        """Attention with a local key set and/or a condition bias (``ck, cv``: storage from key 0)."""
        if self.key_index is not None:
            ck, cv = ck.index_select(1, self.key_index), cv.index_select(1, self.key_index)
        else:
            ck, cv = ck[:, : self.key_end], cv[:, : self.key_end]
        if self.key_bias is None:
            return attention(q, ck, cv, self.key_mask, backend)
        return attention_with_key_bias(q, ck, cv, self.key_bias, self.key_mask)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               backend: AttentionBackend = SDPA) -> torch.Tensor:
        """q, k, v: ``[B, L, H, D]`` of this run -> ``[B, L, H, D]``."""
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            # Training's exit step: the cache stores detached keys (later passes overwrite them in place, which a
            # graph holding views of the storage would not survive); attention reads a private copy with this run's
            # keys spliced in, so gradient reaches this run's keys and the earlier keys stay constants.
            _store(self.cache, layer, self.pieces, k.detach(), v.detach())
            ck, cv = self.cache.k[layer, :, : self.key_end].clone(), self.cache.v[layer, :, : self.key_end].clone()
            _splice(self.cache.geometry.tokens_per_frame, self.pieces, ck, cv, k, v)
            if self.key_index is not None or self.key_bias is not None:
                return self._attend_option(q, ck, cv, backend)
            return attention(q, ck, cv, self.key_mask, backend)
        _store(self.cache, layer, self.pieces, k, v)
        ck, cv = self.cache.k[layer], self.cache.v[layer]
        if self.key_index is not None or self.key_bias is not None:
            return self._attend_option(q, ck, cv, backend)
        return attention(q, ck[:, : self.key_end], cv[:, : self.key_end], self.key_mask, backend)


class ConditionPrefill:
    """Self-attention plan for the condition frames: attend among themselves, store the chosen frames' K/V."""

    def __init__(self, cache: KVCache, slots: list[int | None]) -> None:
        self.cache = cache
        self.pieces = _pieces(slots)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               backend: AttentionBackend = SDPA) -> torch.Tensor:
        _store(self.cache, layer, self.pieces, k, v)
        return attention(q, k, v, None, backend)
