"""The session loop: generate a chunk, decode it at once, switch at chunk boundaries -- the one loop of every job.

The command line, the benchmark and the nodes run a stream through :class:`Session` (the coming live node does too),
so "what the video looks like" and "what a switch does" are decided in one place. One session, top to bottom:

1. before each chunk, apply the switches due at this boundary: those placed on the timeline at this chunk (a list:
   the command line, the benchmark), then those waiting in a thread-safe queue (commands pushed while it runs);
2. generate the chunk (the shared chunk step, through :class:`~chameleon_core.streaming.Rollout`, so the KV cache
   is cloned once per segment between switches, not once per chunk);
3. decode it at once with the carried VAE state (:class:`~chameleon_core.decoding.StreamingDecoder`), so the
   frames are one continuous video, and reference disentangle re-encodes exactly the last frame shown;
4. yield the chunk, then poll ``should_stop`` (and the queue's :data:`STOP`); a stop ends the iteration cleanly
   between chunks and :attr:`Session.state` is the last complete state (the interrupt contract of
   :func:`~chameleon_core.streaming.generate`).

Two options for the live path:

- ``decoder=``: decode with another decoder than the codec, e.g. the tiny TAEHV decoder
  (:func:`~chameleon_core.taehv.load_taehv`), while garment encoding and disentangle keep the full VAE (``codec``).
  Disentangle then re-encodes, with the full VAE's encoder, the tiny decoder's last frame: the frame the viewer saw,
  at the cost of one image encode (decoding it with the full VAE instead would mean a full-VAE decode of the whole
  stream at every switch, or a second full decode per chunk, which is what the tiny decoder is there to avoid).
- ``overlap_decode=True``: chunk k is decoded by a worker thread (on CUDA in its own stream) while chunk k+1 is
  generated; chunks are still yielded in order with the same pixels as the serial loop. Chunk k is handed over
  after chunk k+1 is generated, so a queued command or a stop takes effect one chunk later than in the serial loop
  (a stop still hands over every chunk generated); a switch waits for the decode in flight (disentangle needs the
  last frame shown).

Garment switches carry an image (any size, channels-last ``[1, H, W, C]`` in 0..1): the session fits it to the
stream's resolution as the training data does and encodes it with the session's codec.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from .chunk_step import ChunkInterrupted
from .decoding import ChunkDecoderVAE, StreamingDecoder
from .frames import video_frames as video_frames_of
from .images import fit_garment, to_pixels
from .rescheduling import (
    FrameCodec,
    reference_from_frame,
    switch_garment,
    switch_prompt,
)
from .stream_options import check_stream_options
from .streaming import Rollout, StreamState

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------------------------------
# Switch events
# -------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GarmentSwitch:
    """Switch to another garment; the three rescheduling operations are separately switchable (ablations)."""

    image: torch.Tensor = field(repr=False)
    """The garment image, channels-last ``[1, H, W, C]`` in 0..1, any size (fitted with white padding here)."""
    refresh: bool = True
    withdraw: bool = True
    disentangle: bool = True
    withdraw_sink: bool = True
    new_clip: bool = True
    """With window and sink withdrawn, start a new clip: RoPE positions and the decode restart, the clip's first latent
    frame not shown (see ``switch_garment``)."""
    label: str = "garment"
    """What the timeline calls it (a file or upload name)."""

    kind = "garment"


@dataclass(frozen=True)
class PromptSwitch:
    """Switch to another prompt (LongLive-style re-cache of the frames in the cache)."""

    context: torch.Tensor = field(repr=False)
    """Prompt features ``[1, L, text_dim]``."""
    label: str = "prompt"
    new_shot: bool = False
    """The prompt starts a new shot (LongLive 2.0's scene cut: RoPE offset and shot sink; its profile only)."""

    kind = "prompt"


Switch = GarmentSwitch | PromptSwitch


@dataclass(frozen=True)
class TimedSwitch:
    """A switch placed on the timeline: applied at the boundary before chunk ``chunk`` (0-based, counted from the
    session's start)."""

    chunk: int
    switch: Switch


STOP = object()
"""Put on a session's command queue to end it at the next chunk boundary."""


@dataclass(frozen=True)
class AppliedSwitch:
    """A switch as it happened: what, where, and what it cost (encoding + KV rescheduling)."""

    kind: str
    label: str
    chunk: int
    """Chunks the session had generated before it."""
    latent_frame: int
    """First latent frame of the stream generated after it."""
    video_frame: int
    """First video frame of the session's output after it."""
    seconds: float
    new_clip: bool = False
    """The stream started a new clip here (a garment switch that withdrew every video frame): the next chunk shows
    one latent frame less (:mod:`chameleon_core.frames`)."""


@dataclass(frozen=True)
class SessionChunk:
    """One finished chunk, as the session yields it."""

    index: int
    """Chunk index in this session (0-based)."""
    latents: torch.Tensor = field(repr=False)
    """Clean model-space latents ``[B, C, chunk, h, w]`` (host)."""
    pixels: torch.Tensor | None = field(repr=False)
    """Decoded frames ``[B, 3, F, H, W]`` in [-1, 1], or None when the session does not decode."""
    first_video_frame: int
    """Index of the chunk's first video frame in the session's output."""
    backbone_seconds: float
    """Few-step denoising + clean pass of this chunk."""
    decode_seconds: float
    switches: tuple[AppliedSwitch, ...]
    """Switches applied at the boundary just before this chunk."""


def _sync(device: torch.device) -> None:
    """Wait for the kernels queued on this thread's stream, so wall-clock times belong to the work timed (the
    current stream only: an overlapped decode on its own stream keeps running)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


@dataclass
class _Generated:
    """A generated chunk on its way to the consumer (its decode done, or running on the decode worker)."""

    index: int
    x0: torch.Tensor
    applied: tuple[AppliedSwitch, ...]
    backbone_seconds: float
    first_video_frame: int
    """Where the chunk starts in the session's output (counted, not decoded)."""
    opens_clip: bool
    """The chunk opens a later clip of the stream (its decode restarts; its first latent frame is not shown)."""
    decoded: Future | None = None
    """Resolves to (first video frame, pixels, decode seconds); None when the session does not decode."""


# -------------------------------------------------------------------------------------------------------------------
# The loop
# -------------------------------------------------------------------------------------------------------------------


class Session:
    """Runs a stream chunk by chunk from ``state``; iterate it to get :class:`SessionChunk` s.

    Args:
        state: where the stream starts (from :func:`~chameleon_core.streaming.start_stream`, or any later state:
            the decoder then first runs over the stream's latents so far, so the video continues without a restart).
        chunks: how many chunks to generate; None runs until stopped (live mode).
        codec: the VAE: streaming decode of every chunk, garment encoding, disentangle. None generates latents only
            (then garment switches need no codec only with refresh and disentangle off).
        timeline: switches at chunk boundaries (``chunk`` >= 1 and < ``chunks``).
        commands: a queue of :data:`Switch` es (or :data:`STOP`) pushed from another thread, applied at the next
            chunk boundary in arrival order, after the timeline's switches at that boundary.
        should_stop: polled between chunks; True ends the session cleanly.
        decode: decode each chunk (needs ``codec`` or ``decoder``).
        steps: override the stream's steps per chunk for the whole session.
        decoder: decode with this instead of ``codec`` (the tiny TAEHV decoder on the live path); ``codec`` still
            encodes garments and the disentangle frame. Must make the codec's frame counts (TAEHV does).
        overlap_decode: decode chunk k on a worker while chunk k+1 generates (see the module docstring). A consumer
            that leaves the loop early (``break``) then leaves the one chunk already generated unhanded: it is in
            :attr:`state` but was never yielded; stop through ``should_stop`` / :data:`STOP` to get every chunk.
        noise, clean_pass: the chunk step's noise mode and clean pass (:class:`~chameleon_core.streaming.Rollout`).
        continue_decode: a decoder that has decoded this stream up to ``state`` (an earlier session's
            :attr:`decoder`): the video continues from it (forked, so it can be continued again) instead of the
            stream so far being decoded once more. A session started from a stream with frames may then also switch
            at chunk 0, the boundary it starts at.
    """

    def __init__(
        self,
        state: StreamState,
        *,
        chunks: int | None,
        codec: FrameCodec | None = None,
        timeline: Sequence[TimedSwitch] = (),
        commands: queue.Queue | None = None,
        should_stop: Callable[[], bool] | None = None,
        decode: bool = True,
        steps: int | None = None,
        decoder: ChunkDecoderVAE | None = None,
        overlap_decode: bool = False,
        noise: str = "cpu",
        clean_pass: bool = True,
        continue_decode: StreamingDecoder | None = None,
    ) -> None:
        if chunks is not None and chunks < 1:
            raise ValueError(f"a session needs at least one chunk, got chunks={chunks}")
        if chunks is None and commands is None and should_stop is None:
            raise ValueError("chunks=None runs until stopped: give a command queue or should_stop to stop it by")
        if decode and codec is None and decoder is None:
            raise ValueError("decode=True needs the VAE (codec=...) or a decoder (decoder=...); pass decode=False to "
                             "generate latents only")
        first = 0 if state.latent_frames else 1  # a continued stream may switch at the boundary it starts at
        for event in timeline:
            if isinstance(event.switch, GarmentSwitch) and not state.settings.conditions:
                raise ValueError(
                    f"a garment switch at chunk {event.chunk}, but this stream has no garment: it streams a public "
                    "text-/image-to-video student without reference and garment conditions. Switch prompts instead"
                )
            if event.chunk < first or (chunks is not None and event.chunk >= chunks):
                raise ValueError(
                    f"a {event.switch.kind} switch at chunk {event.chunk} is outside the session's boundaries "
                    f"({first}..{'any' if chunks is None else chunks - 1}); switches happen between chunks"
                )
        if continue_decode is not None and continue_decode.latent_frames != state.latent_frames:
            raise ValueError(
                f"continue_decode has decoded {continue_decode.latent_frames} latent frames but the stream has "
                f"{state.latent_frames}; pass the decoder of the session that produced this state"
            )
        check_stream_options(state, steps=steps, chunks=chunks)  # a short source video fails here, not mid-way
        self._state = state
        self._rollout: Rollout | None = None
        self._counted_frames = 0
        """Video frames the session's chunks show, counted without decoding."""
        self.chunks = chunks
        self.codec = codec
        self.timeline = sorted(timeline, key=lambda e: (e.chunk, e.switch.kind != "garment"))
        self.commands = commands
        self.should_stop = should_stop
        if decode and continue_decode is not None:
            self.decoder: StreamingDecoder | None = continue_decode.fork()
            self._video_offset = self.decoder.video_frames
        else:
            self.decoder = StreamingDecoder(decoder or codec, state.model.config.latent) if decode else None
            self._video_offset = self._warm_up_decoder(state) if self.decoder is not None else 0
        self.steps = steps
        self.overlap_decode = overlap_decode and self.decoder is not None
        self.noise, self.clean_pass = noise, clean_pass
        self.applied: list[AppliedSwitch] = []
        """Every switch applied so far, in order (the session's timeline as it happened)."""
        self.done = 0
        """Chunks generated so far."""
        self.stopped = False
        """True when a stop (``should_stop`` or :data:`STOP`) ended the session before ``chunks``."""

    # -- views ----------------------------------------------------------------------------------------------------

    @property
    def state(self) -> StreamState:
        """The last complete state: the start, then the state after the latest chunk or switch. Reading it while
        the session runs costs one cache copy at the next chunk (the running segment is closed)."""
        self._finish()
        return self._state

    def _warm_up_decoder(self, state: StreamState) -> int:
        """A session that starts from a stream with frames continues its video: the decoder first runs over the
        stream's latents so far (output discarded), so the session's frames and disentangle's last frame are those of
        the continuous decode. Returns the video frames this produced (the session's output counts from 0 after)."""
        if state.latent_frames == 0:
            return 0
        if state.opens_clip or not state.history_complete:
            if not state.opens_clip:
                logger.warning("the stream kept only its cached latents (keep_history=False), so the decode restarts "
                               "at latent frame %d: the session's first frames are decoded as a new video",
                               state.latent_frames)
            self.decoder.latent_frames = state.latent_frames  # a new clip's decode needs nothing before it
            return 0
        return self.decoder.warm_up(state.latents(), state.settings.chunk_frames,
                                    clip_starts=state.clip_starts).video_frames

    def _finish(self) -> None:
        if self._rollout is not None:
            self._state, self._rollout = self._rollout.finish(), None

    @property
    def video_frames(self) -> int:
        """Video frames produced so far (decoded, or what decoding would give)."""
        if self.decoder is not None:
            return self.decoder.video_frames - self._video_offset
        return self._counted_frames

    # -- the loop -------------------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[SessionChunk]:
        pending = list(self.timeline)
        worker = ThreadPoolExecutor(1, thread_name_prefix="chameleon-decode") if self.overlap_decode else None
        held: _Generated | None = None  # overlap: the chunk whose decode is running
        try:
            while self.chunks is None or self.done < self.chunks:
                # 1. Switches due at this boundary: the timeline's, then the queue's.
                due = [e.switch for e in pending if e.chunk == self.done]
                pending = [e for e in pending if e.chunk != self.done]
                queued, stop = self._drain() if self.done > 0 else ([], False)
                if stop:
                    self.stopped = True
                    break
                if (due or queued) and held is not None:
                    # A switch reads the last frame shown and the frame count: the decode in flight finishes first.
                    yield self._collect(held)
                    held = None
                    if self._stop_polled():
                        break
                applied = tuple(self._apply(switch) for switch in due + queued)
                # 2. Generate the chunk (one cache clone per segment between switches, not per chunk). A stop
                #    between its denoising steps abandons it (the rollout rewinds): the session ends here.
                try:
                    current = self._generate(applied)
                except ChunkInterrupted:
                    self.stopped = True
                    logger.info("session stopped during chunk %d", self.done + 1)
                    break
                # 3. Decode it (at once, or on the worker while the next chunk generates), carrying the VAE state.
                current.decoded = self._decode(current, worker)
                # 4. Hand chunks over in order, then poll for a stop.
                if held is not None:
                    yield self._collect(held)
                    held = None
                    if self._stop_polled():
                        yield self._collect(current)  # generated already: part of the state, so handed over too
                        break
                if worker is not None:
                    held = current
                    continue
                yield self._collect(current)
                if self._stop_polled():
                    break
            if held is not None:
                yield self._collect(held)
                held = None
        finally:
            if worker is not None:
                worker.shutdown(wait=True)
            self._finish()

    def _stop_polled(self) -> bool:
        if self.should_stop is not None and self.should_stop():
            self.stopped = self.chunks is None or self.done < self.chunks
            logger.info("session stopped after %d chunks", self.done)
            return True
        return False

    def _generate(self, applied: tuple[AppliedSwitch, ...]) -> _Generated:
        if self._rollout is None:
            self._rollout = Rollout(self._state, steps=self.steps, noise=self.noise, clean_pass=self.clean_pass,
                                    should_stop=self.should_stop)
        at = self._rollout.latent_frames  # the chunk's first latent frame: a stream's start or a new clip's
        from_start, opens = at == 0, at > 0 and at in self._rollout.state.clip_starts
        device = self._state.model.device
        _sync(device)
        t0 = time.perf_counter()
        x0 = self._rollout.step()
        _sync(device)
        self.done += 1
        first = self._counted_frames
        self._counted_frames += video_frames_of(x0.shape[2], from_start=from_start, opens_clip=opens,
                                                stride=self._state.model.config.latent.temporal_stride)
        return _Generated(self.done - 1, x0, applied, time.perf_counter() - t0, first, opens)

    def _decode(self, g: _Generated, worker: ThreadPoolExecutor | None) -> Future | None:
        """Decode now (serial), or submit to the worker (overlap); the future gives (first frame, pixels, seconds)."""
        if self.decoder is None:
            return None
        decoder, device, x0 = self.decoder, self._state.model.device, g.x0
        ready = None
        if worker is not None and device.type == "cuda":
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(device))

        def run() -> tuple[int, torch.Tensor, float]:
            t0 = time.perf_counter()
            first = decoder.video_frames - self._video_offset
            if ready is None:
                pixels = decoder.decode(x0, opens_clip=g.opens_clip)
                _sync(device)
            else:  # a second stream: waits for the chunk's kernels only, then runs beside the next chunk's
                stream = self._decode_stream()
                with torch.cuda.stream(stream):
                    stream.wait_event(ready)
                    x0.record_stream(stream)
                    pixels = decoder.decode(x0, opens_clip=g.opens_clip)
                stream.synchronize()
            return first, pixels, time.perf_counter() - t0

        if worker is not None:
            return worker.submit(run)
        done: Future = Future()
        done.set_result(run())
        return done

    def _decode_stream(self) -> torch.cuda.Stream:
        if getattr(self, "_stream", None) is None:
            self._stream = torch.cuda.Stream(self._state.model.device)
        return self._stream

    def _collect(self, g: _Generated) -> SessionChunk:
        if g.decoded is None:
            first, pixels, decode_s = g.first_video_frame, None, 0.0
        else:
            first, pixels, decode_s = g.decoded.result()
        return SessionChunk(g.index, g.x0.detach().cpu(), pixels, first, g.backbone_seconds, decode_s, g.applied)

    def run(self) -> list[SessionChunk]:
        """Run to the end (or a stop) and return every chunk."""
        return list(self)

    # -- switches -------------------------------------------------------------------------------------------------

    def _drain(self) -> tuple[list[Switch], bool]:
        """Commands waiting in the queue, and whether a stop is among them (commands after a stop are dropped)."""
        if self.commands is None:
            return [], False
        got: list[Switch] = []
        while True:
            try:
                item = self.commands.get_nowait()
            except queue.Empty:
                return got, False
            if item is STOP:
                return got, True
            if not isinstance(item, (GarmentSwitch, PromptSwitch)):
                raise TypeError(f"a session command must be a GarmentSwitch, a PromptSwitch or STOP, got {item!r}")
            got.append(item)

    def _apply(self, switch: Switch) -> AppliedSwitch:
        self._finish()
        device = self._state.model.device
        _sync(device)
        t0 = time.perf_counter()
        if isinstance(switch, PromptSwitch):
            self._state = switch_prompt(self._state, switch.context, new_shot=switch.new_shot)
        else:
            self._state = self._switch_garment(switch)
        _sync(device)
        seconds = time.perf_counter() - t0
        applied = AppliedSwitch(switch.kind, switch.label, self.done, self._state.latent_frames, self.video_frames,
                                seconds, new_clip=isinstance(switch, GarmentSwitch) and self._state.opens_clip)
        self.applied.append(applied)
        logger.info("%s switch to %s before chunk %d (video frame %d): %.3f s", switch.kind, switch.label, self.done,
                    applied.video_frame, seconds)
        return applied

    def _switch_garment(self, switch: GarmentSwitch) -> StreamState:
        state = self._state
        if (switch.refresh or switch.disentangle) and self.codec is None:
            raise ValueError("a garment switch with refresh or disentangle needs the VAE; give the session a codec")
        garment = self.encode_garment(switch.image) if switch.refresh else None
        new_reference = None
        if switch.disentangle and self.decoder is not None and self.decoder.last_frame is not None:
            # The frame the viewer saw last, from the decode the session already runs: no second decode.
            new_reference = reference_from_frame(self.codec, state.model.config.latent, self.decoder.last_frame)
        return switch_garment(state, garment, refresh=switch.refresh, withdraw=switch.withdraw,
                              disentangle=switch.disentangle, withdraw_sink=switch.withdraw_sink, codec=self.codec,
                              new_reference=new_reference, new_clip=switch.new_clip)

    def encode_garment(self, image: torch.Tensor) -> torch.Tensor:
        """A garment image (any size) -> model-space one-frame latent at the stream's resolution."""
        return encode_condition(self.codec, self._state, image, garment=True)


def encode_condition(codec: FrameCodec, state_or_family, image: torch.Tensor, *, garment: bool,
                     size: tuple[int, int] | None = None) -> torch.Tensor:
    """Fit an image ``[1, H, W, C]`` (0..1) to the video size and encode it as a model-space one-frame latent.

    ``state_or_family``: a :class:`StreamState` (its resolution is used) or a latent family with ``size`` =
    (width, height). Garments are fitted with white padding, references cover-cropped.
    """
    from .images import fit_reference

    if isinstance(state_or_family, StreamState):
        family = state_or_family.model.config.latent
        _, _, h, w = state_or_family.latent_shape
        width, height = w * family.spatial_stride, h * family.spatial_stride
    else:
        family = state_or_family
        if size is None:
            raise ValueError("encode_condition with a latent family needs size=(width, height)")
        width, height = size
    fitted = (fit_garment if garment else fit_reference)(image, width, height)  # [1, H, W, 3]
    raw = codec.encode_image(to_pixels(fitted).to(codec.device, codec.dtype))  # [1, C, 1, h, w]
    return family.to_model_space(raw.float())
