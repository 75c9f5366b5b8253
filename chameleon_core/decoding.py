"""The one streaming-decode entry point: latent chunks in, pixel frames out, with the VAE's causal state carried.

The session loop, the decode node, the benchmarks and reference disentangle all decode through
:class:`StreamingDecoder`, so a stream's pixels are the same wherever they are made: chunk after chunk, across
segments and switches, the frames equal one whole-video decode (the causal VAE carries two frames of each temporal
convolution's input; ``tests/test_vae.py`` checks the equality), while memory stays at one chunk.

A stream of several clips (a garment switch that restarts it, :attr:`~chameleon_core.streaming.StreamState.
clip_starts`) restarts the decode at each clip's first latent frame, which is decoded as a new video's first frame
and not shown (:mod:`chameleon_core.frames`); every decode path takes the clip starts, so the frames are still the
same wherever they are made.

A stream that branches (a node graph: several Generates after one switch) decodes through :class:`VideoSegment`: each
segment decoded at most once per VAE, continuing the decode point of the segment before it
(:meth:`StreamingDecoder.point` / :meth:`StreamingDecoder.resume`), so garment switches and the final decode share
one decode of the video instead of each decoding the stream so far.

Any VAE with the core's streaming interface plugs in (:class:`ChunkDecoderVAE`): the core's :class:`~chameleon_core.
vae.WanVAE`, the node pack's wrapper over ComfyUI's VAE weights, or the tiny TAEHV decoder
(:class:`~chameleon_core.taehv.TinyVideoDecoder`, the live path's cheap decoder; it makes the same frame counts).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .latents import LatentFamily

logger = logging.getLogger(__name__)


class ChunkDecoderVAE(Protocol):
    """What streaming decode needs from a VAE."""

    device: torch.device
    dtype: torch.dtype

    def decode_chunk(self, latents: torch.Tensor, state: Any = None, *, clamp: bool = True, consume: bool = False
                     ) -> tuple[torch.Tensor, Any]:
        """Raw latents ``[B, C, n, h, w]`` and the previous state -> pixels ``[B, 3, F, H, W]`` in [-1, 1], state."""
        ...


@dataclass(frozen=True)
class DecodePoint:
    """Where a continuous decode stands (:meth:`StreamingDecoder.point`): enough to continue it
    (:meth:`StreamingDecoder.resume`), with no reference to the VAE."""

    state: Any = field(repr=False)
    """The VAE's causal state after :attr:`latent_frames` (None before the first)."""
    latent_frames: int
    video_frames: int
    last_frame: torch.Tensor | None = field(repr=False)
    """The video's newest frame ``[B, 3, H, W]`` in [-1, 1]."""


class StreamingDecoder:
    """Decodes one continuous video chunk by chunk; remembers the last pixel frame (for reference disentangle).

    ``family`` given: :meth:`decode` takes model-space latents (what the stream produces) and converts them to raw
    VAE latents first; None: it takes raw latents (ComfyUI LATENT ``samples``).
    """

    def __init__(self, vae: ChunkDecoderVAE, family: LatentFamily | None = None) -> None:
        self.vae = vae
        self.family = family
        self._state: Any = None
        self.latent_frames = 0
        """Latent frames decoded so far."""
        self.video_frames = 0
        """Pixel frames produced so far."""
        self.last_frame: torch.Tensor | None = None
        """The newest pixel frame ``[B, 3, H, W]`` in [-1, 1], as the continuous video shows it."""
        self._shared = False
        """The causal state is shared with a fork: the next decode must not release it."""

    def fork(self) -> StreamingDecoder:
        """A decoder that continues this video from here, independently of this one: both can go on (e.g. two
        branches of a stream after the same chunk). The causal state is shared until each one's next decode, which
        leaves it intact (copy-on-continue), so forking costs nothing."""
        other = StreamingDecoder(self.vae, self.family)
        other._state, other.latent_frames, other.video_frames = self._state, self.latent_frames, self.video_frames
        other.last_frame = self.last_frame
        self._shared = other._shared = self._state is not None
        return other

    def decode_more(self, latents: torch.Tensor, chunk_frames: int, *, clip_starts: Iterable[int] = (),
                    should_stop: Callable[[], bool] | None = None) -> Iterator[torch.Tensor]:
        """Decode ``latents`` ``[B, C, n, h, w]`` (the video's next latent frames) ``chunk_frames`` at a time; yields
        each chunk's pixels. The one loop that decodes a run of chunks: :meth:`catch_up`, :func:`decode_chunks` and
        :meth:`VideoSegment.decode` run it. ``clip_starts``: the stream's latent frames where a later clip begins
        (a chunk is cut there, and the clip's decode restarts, its first frame not shown).

        Stops (without raising) between chunks once ``should_stop()`` returns True.
        """
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        base = self.latent_frames
        n = latents.shape[2]
        cuts = sorted({s - base for s in clip_starts if base <= s < base + n and s > 0})
        bounds = sorted({0, n, *cuts, *range(0, n, chunk_frames)})
        for start, stop in zip(bounds, bounds[1:]):
            if should_stop is not None and should_stop():
                return
            yield self.decode(latents[:, :, start:stop], opens_clip=start in cuts)

    def catch_up(self, latents: torch.Tensor, chunk_frames: int, *, clip_starts: Iterable[int] = (),
                 should_stop: Callable[[], bool] | None = None) -> Iterator[torch.Tensor]:
        """Decode what this decoder has not decoded yet of ``latents`` (the video's latents from its first frame,
        ``[B, C, T, h, w]``, with later clips starting at ``clip_starts``), ``chunk_frames`` at a time; yields each
        chunk's pixels: a fresh decoder decodes the whole video, a forked one only the frames since its fork."""
        if latents.shape[2] < self.latent_frames:
            raise ValueError(f"the decoder has decoded {self.latent_frames} latent frames, but the video has only "
                             f"{latents.shape[2]}; decode it with a decoder of this video (or a fresh one)")
        return self.decode_more(latents[:, :, self.latent_frames :], chunk_frames, clip_starts=clip_starts,
                                should_stop=should_stop)

    def warm_up(self, latents: torch.Tensor, chunk_frames: int, *, clip_starts: Iterable[int] = ()
                ) -> StreamingDecoder:
        """:meth:`catch_up` with the pixels dropped: afterwards the decoder continues the video after ``latents``,
        and :attr:`last_frame` is its last frame. Returns the decoder."""
        for _ in self.catch_up(latents, chunk_frames, clip_starts=clip_starts):
            pass
        return self

    def point(self, device: torch.device | str = "cpu") -> DecodePoint:
        """Where this decode stands, as a copy on ``device`` (host memory by default: a parked point holds no
        accelerator memory) that this decoder's later decodes leave intact."""
        state = None if self._state is None else self._state.to(device)  # a new state object: ours may go on
        last = None if self.last_frame is None else self.last_frame.to(device)
        return DecodePoint(state, self.latent_frames, self.video_frames, last)

    @classmethod
    def resume(cls, vae: ChunkDecoderVAE, point: DecodePoint, family: LatentFamily | None = None) -> StreamingDecoder:
        """A decoder with ``vae`` that continues the video from ``point`` (the point stays intact)."""
        decoder = cls(vae, family)
        decoder._state, decoder.latent_frames, decoder.video_frames = point.state, point.latent_frames, point.video_frames
        decoder.last_frame = point.last_frame
        decoder._shared = point.state is not None
        return decoder

    @property
    def state_nbytes(self) -> int:
        """Memory held by the carried causal state, in bytes."""
        return getattr(self._state, "nbytes", 0) if self._state is not None else 0

    def decode(self, latents: torch.Tensor, *, opens_clip: bool = False) -> torch.Tensor:
        """The next latent frames ``[B, C, n, h, w]`` -> the pixels they show ``[B, 3, F, H, W]`` in [-1, 1] (VAE
        device). ``opens_clip``: they open a later clip of the stream: the decode restarts (no carried state) and
        the clip's first frame, which re-draws the frame before, is not shown (F may then be 0)."""
        if opens_clip and self.latent_frames == 0:
            raise ValueError("opens_clip marks a later clip of a stream; the video's first latent frames open it "
                             "already (decode them without opens_clip)")
        if opens_clip:
            self._state = None  # a fork may still hold the old state: it is left intact
            self._shared = False
        # consume: the old state's caches are released during the call (memory stays at one chunk), unless a fork
        # shares them
        consume, self._shared = not self._shared, False
        if self.family is not None and getattr(self.vae, "latent_space", "raw") == "model":
            # A decoder trained on the DiT's normalised latents (the tiny decoder): no raw round trip.
            pixels, self._state = self.vae.decode_model_space(latents, self._state, consume=consume)
        else:
            raw = self.family.to_raw(latents.float()) if self.family is not None else latents
            raw = raw.to(self.vae.device, self.vae.dtype)
            pixels, self._state = self.vae.decode_chunk(raw, self._state, consume=consume)
        if opens_clip:
            pixels = pixels[:, :, 1:]
        self.latent_frames += latents.shape[2]
        self.video_frames += pixels.shape[2]
        if pixels.shape[2]:
            self.last_frame = pixels[:, :, -1]
        return pixels


def decode_chunks(
    vae: ChunkDecoderVAE,
    latents: torch.Tensor,
    chunk_frames: int,
    *,
    family: LatentFamily | None = None,
    clip_starts: Iterable[int] = (),
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[torch.Tensor]:
    """Decode a whole latent video ``[B, C, T, h, w]`` (later clips starting at ``clip_starts``) ``chunk_frames`` at
    a time; yields each chunk's pixels.

    Stops (without raising) between chunks once ``should_stop()`` returns True.
    """
    return StreamingDecoder(vae, family).decode_more(latents, chunk_frames, clip_starts=clip_starts,
                                                     should_stop=should_stop)


@dataclass(frozen=True)
class _Decoded:
    pixels: torch.Tensor
    """The segment's frames ``[B, 3, F, H, W]`` in [-1, 1] (host)."""
    end: DecodePoint
    """The decode at the segment's end (host)."""


class VideoSegment:
    """A run of a stream's latent frames and the segment it continues: a stream's video as a chain of segments
    (branches share what came before them), each decoded at most once per VAE.

    The node graph makes one per Stream Generate (its stream and its LATENT carry it): a garment switch after it
    takes the last frame of its decode, Stream Decode its pixels, and whichever comes first decodes while the other
    reuses that. Decoding a segment continues the decode of the one before it (decoding that first if nobody has),
    so a chain of N segments with a switch after each decodes the video once, not once per switch.

    What a decode leaves, per VAE (entries go with their VAE): the segment's pixels and the decode point at its end,
    both in host memory. The point is the VAE's causal state (at 1280x704 about 3 GiB in bf16 for Wan2.2, less than
    a stream state's KV cache); it lets a later segment, or a second branch after this one, continue without
    decoding the past again. Segments live as long as the stream objects and LATENTs that carry them.
    """

    def __init__(self, latents: torch.Tensor, start: int, previous: VideoSegment | None = None,
                 family: LatentFamily | None = None, clip_starts: Iterable[int] = ()) -> None:
        if previous is not None and previous.end != start:
            raise ValueError(f"a segment starting at latent frame {start} cannot continue one that ends at "
                             f"{previous.end}")
        self.clip_starts = tuple(sorted(s for s in clip_starts if 0 < s and start <= s < start + latents.shape[2]))
        """The stream's latent frames in this segment where a later clip begins (its decode restarts there)."""
        self.latents = latents
        """The segment's latents ``[B, C, n, h, w]``: raw VAE latents, or model space when ``family`` is given."""
        self.start = start
        """Its first latent frame in the stream."""
        self.previous = previous
        """The segment it continues; None at the stream's start (or where its past is unknown: decoded anew)."""
        self.family = family
        self._decoded: weakref.WeakKeyDictionary[object, _Decoded] = weakref.WeakKeyDictionary()

    @property
    def end(self) -> int:
        """The latent frame after its last."""
        return self.start + self.latents.shape[2]

    def is_decoded(self, vae: ChunkDecoderVAE) -> bool:
        return vae in self._decoded

    def remember(self, vae: ChunkDecoderVAE, pixels: torch.Tensor, decoder: StreamingDecoder) -> None:
        """Record a decode made elsewhere (the live session's): the segment's ``pixels`` and the ``decoder`` that
        made them, now at the segment's end."""
        if decoder.latent_frames != self.end:
            raise ValueError(f"the decoder stands at latent frame {decoder.latent_frames}, the segment ends at "
                             f"{self.end}")
        self._decoded[vae] = _Decoded(pixels.cpu(), decoder.point())

    def decode(self, vae: ChunkDecoderVAE, chunk_frames: int, *, should_stop: Callable[[], bool] | None = None
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The segment's frames with ``vae`` as ``(latents, pixels)`` pieces: the whole segment at once when it was
        decoded before, else chunk by chunk as they decode (the segments before it decoded first where nobody has).
        Stops between chunks once ``should_stop()`` returns True (then nothing is remembered)."""
        done = self._decoded.get(vae)
        if done is not None:
            yield self.latents, done.pixels
            return
        decoder = self._decoder_at_start(vae, chunk_frames)
        pieces = []
        before = decoder.latent_frames
        for pixels in decoder.decode_more(self.latents, chunk_frames, clip_starts=self.clip_starts,
                                          should_stop=should_stop):
            pieces.append(pixels.cpu())
            yield self.latents[:, :, before - self.start : decoder.latent_frames - self.start], pixels
            before = decoder.latent_frames
        if decoder.latent_frames == self.end:
            self._decoded[vae] = _Decoded(torch.cat(pieces, dim=2), decoder.point())

    def end_point(self, vae: ChunkDecoderVAE, chunk_frames: int) -> DecodePoint:
        """The decode at the segment's end with ``vae`` (decoding what nobody has decoded yet)."""
        if vae not in self._decoded:
            for _ in self.decode(vae, chunk_frames):
                pass
        return self._decoded[vae].end

    def _decoder_at_start(self, vae: ChunkDecoderVAE, chunk_frames: int) -> StreamingDecoder:
        """A decoder standing at this segment's start: resumed from the nearest segment before it that was decoded,
        after decoding (and remembering) the ones between; a segment that opens a clip needs none of its past."""
        todo, seg = [], self.previous
        opens = self.start in self.clip_starts
        while not opens and seg is not None and vae not in seg._decoded:
            todo.append(seg)
            opens = seg.start in seg.clip_starts
            seg = seg.previous
        first = todo[-1] if todo else self
        if seg is not None and not opens:
            decoder = StreamingDecoder.resume(vae, seg._decoded[vae].end)
        else:  # opens: the decode restarts at ``first``, what came before cannot change its frames
            if first.start and not opens:
                logger.warning("the video before latent frame %d is unknown here: decoding from it as a new video "
                               "(its first frames differ from the continuous decode)", first.start)
            decoder = StreamingDecoder(vae)
            decoder.latent_frames = first.start
            before = first.previous
            if opens and before is not None and vae in before._decoded:  # the frame shown before the new clip
                decoder.last_frame = before._decoded[vae].end.last_frame
        for seg in reversed(todo):
            decoder.family = seg.family
            pixels = [p.cpu() for p in decoder.decode_more(seg.latents, chunk_frames, clip_starts=seg.clip_starts)]
            seg._decoded[vae] = _Decoded(torch.cat(pixels, dim=2), decoder.point())
        decoder.family = self.family
        return decoder
