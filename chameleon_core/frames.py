"""Frame arithmetic of the causal video VAE and the chunked stream: video frames <-> latent frames <-> chunks.

The one place it is written; every module that counts frames calls it. The rule (Wan2.1 and Wan2.2's causal VAEs,
:attr:`~chameleon_core.latents.LatentFamily.temporal_stride` = 4): a video's first latent frame decodes to one video
frame alone, every later latent frame to ``stride`` video frames. So ``n`` latent frames that start a video are
``1 + stride (n - 1)`` video frames, and ``n`` latent frames that continue one (anything after its first latent frame:
every segment of a stream but the first) are ``stride n``. Latent frame ``j >= 1`` covers video frames
``stride (j - 1) + 1 .. stride j``.

A stream can hold several clips: a garment switch that withdraws every video frame from the cache starts a new clip
(:attr:`~chameleon_core.streaming.StreamState.clip_starts`). A new clip's first latent frame re-draws the frame
before it (the new reference, in the new garment) and is decoded as a new video's first frame but **not shown**, as
an image-to-video continuation drops its input frame: so ``n`` latent frames that open a later clip show
``stride (n - 1)`` video frames (``opens_clip``), and the frames after it continue the motion with no held frame.

A stream makes whole chunks of ``chunk_frames`` latent frames: chunk ``k`` (0-based) holds latent frames
``k c .. k c + c - 1``, and its first video frame is ``0`` for the first chunk, ``1 + stride (k c - 1)`` after it.

Names carry their unit: ``video_frames``, ``latent_frames``, ``chunk`` (an index) / ``chunks`` (a count).
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .streaming import StreamState

TEMPORAL_STRIDE = 4
"""Video frames per latent frame after the first, in both released Wan VAEs (a latent family says its own)."""


def video_frames(latent_frames: int, *, from_start: bool = True, opens_clip: bool = False,
                 stride: int = TEMPORAL_STRIDE) -> int:
    """Video frames that ``latent_frames`` latent frames show: ``1 + stride (n - 1)`` when they start the video
    (``from_start``), ``stride (n - 1)`` when they open a later clip (``opens_clip``: the first is not shown),
    ``stride n`` when they continue it; 0 for none."""
    if latent_frames < 0:
        raise ValueError(f"latent frame count must be >= 0, got {latent_frames}")
    if latent_frames == 0:
        return 0
    if opens_clip and not from_start:
        return stride * (latent_frames - 1)
    return stride * (latent_frames - 1) + 1 if from_start else stride * latent_frames


def stream_video_frames(start: int, stop: int, clip_starts: tuple[int, ...] | list[int] = (), *,
                        stride: int = TEMPORAL_STRIDE) -> int:
    """Video frames that latent frames ``start .. stop - 1`` of a stream show, with later clips opening at the latent
    frames ``clip_starts`` (each shows nothing; see the module docstring): the frame count of a stretch of a
    stream that may span garment switches."""
    if not 0 <= start <= stop:
        raise ValueError(f"latent frame range {start}..{stop} is not a range")
    hidden = sum(1 for s in clip_starts if start <= s < stop and s > 0)
    shown = stride * (stop - start) - stride * hidden
    return shown - (stride - 1) if start == 0 < stop else shown


def latent_frames(video_frames: int, *, stride: int = TEMPORAL_STRIDE) -> int:
    """Latent frames the encoder makes of a whole video of ``video_frames`` frames: ``(v - 1) // stride + 1`` (frames
    after the last whole group of ``stride`` are dropped, as Wan's VAE drops them)."""
    if video_frames < 1:
        raise ValueError(f"video frame count must be >= 1, got {video_frames}")
    return (video_frames - 1) // stride + 1


def is_whole_video(video_frames: int, *, stride: int = TEMPORAL_STRIDE) -> bool:
    """True for a video the encoder maps to latent frames with no frame dropped: ``1 + stride k`` frames (9, 17, ...,
    81 for stride 4)."""
    return video_frames >= 1 and (video_frames - 1) % stride == 0


def whole_video_at_most(video_frames: int, *, stride: int = TEMPORAL_STRIDE) -> int:
    """The longest whole video (``1 + stride k`` frames) of at most ``video_frames`` frames (1 at least)."""
    return max(1, (video_frames - 1) // stride * stride + 1)


def latent_frames_covering(video_frames: int, *, from_start: bool = True, opens_clip: bool = False,
                           stride: int = TEMPORAL_STRIDE) -> int:
    """The fewest latent frames that show at least ``video_frames`` video frames (from the video's start, opening a
    later clip, or continuing it): what to generate to show that many frames."""
    if video_frames < 1:
        raise ValueError(f"video frame count must be >= 1, got {video_frames}")
    if from_start:
        return 1 + math.ceil((video_frames - 1) / stride)
    if opens_clip:
        return 1 + math.ceil(video_frames / stride)
    return math.ceil(video_frames / stride)


def chunk_first_video_frame(chunk: int, chunk_frames: int, *, stride: int = TEMPORAL_STRIDE) -> int:
    """First video frame of chunk ``chunk`` (0-based) of a stream: 0, then where ``chunk * chunk_frames`` latent
    frames end."""
    if chunk < 0:
        raise ValueError(f"chunk index must be >= 0, got {chunk}")
    return video_frames(chunk * chunk_frames, stride=stride)


def chunk_video_ranges(latent_frames: int, chunk_frames: int, *, clip_starts: tuple[int, ...] | list[int] = (),
                       stride: int = TEMPORAL_STRIDE) -> list[range]:
    """The video frames of each chunk of ``latent_frames`` latent frames decoded from the video's start (a last short
    chunk holds what is left), with later clips opening at the latent frames ``clip_starts``."""
    ends = [stream_video_frames(0, min(start + chunk_frames, latent_frames), clip_starts, stride=stride)
            for start in range(0, latent_frames, chunk_frames)]
    return [range(a, b) for a, b in zip([0, *ends], ends)]


def latent_frame_video_range(latent_frame: int, *, stride: int = TEMPORAL_STRIDE) -> range:
    """The video frames latent frame ``latent_frame`` of a video covers: ``0`` alone, then ``stride (j - 1) + 1 ..
    stride j``."""
    if latent_frame < 0:
        raise ValueError(f"latent frame index must be >= 0, got {latent_frame}")
    return range(video_frames(latent_frame, stride=stride), video_frames(latent_frame + 1, stride=stride))


def landing_chunk(video_frame: int, chunk_frames: int, *, stride: int = TEMPORAL_STRIDE) -> int:
    """The first chunk boundary (chunk index >= 1) whose chunk starts at or after video frame ``video_frame``: where a
    switch asked for at that frame lands."""
    if video_frame < 1:
        return 1
    return max(1, math.ceil(latent_frames_covering(video_frame, stride=stride) / chunk_frames))


def segment_video_frames(chunk_starts: list[int], chunks: int, chunk_frames: int, *,
                         clip_chunks: tuple[int, ...] | list[int] | set[int] = (),
                         stride: int = TEMPORAL_STRIDE) -> list[int]:
    """Video frames of each segment of a stream of ``chunks`` chunks cut before the chunks ``chunk_starts`` (the
    first is 0), where the chunks ``clip_chunks`` open a new clip (after a garment switch that restarts it): a
    generate node asking for exactly these makes whole chunks, none extra."""
    bounds = [*chunk_starts, chunks]
    out = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        if b <= a:
            raise ValueError(f"segment {i + 1} has no chunks (chunks {a}..{b})")
        out.append(video_frames((b - a) * chunk_frames, from_start=a == 0, opens_clip=a in clip_chunks,
                                stride=stride))
    return out


def whole_chunk_segments(total_video_frames: int, switch_video_frames: list[int] | tuple[int, ...], chunk_frames: int,
                         *, switches_open_clips: bool = False, stride: int = TEMPORAL_STRIDE) -> list[int]:
    """Video frames of each segment of a ``total_video_frames``-frame stream cut at the video frames
    ``switch_video_frames``, checked to be whole chunks; ``switches_open_clips``: each switch starts a new clip (a
    garment switch that withdraws every video frame, the default), so the segment after it shows one latent frame
    less. Raises ValueError naming the segment and what would fit."""
    bounds = [0, *switch_video_frames, total_video_frames]
    if sorted(set(bounds)) != bounds:
        raise ValueError(f"switch frames {list(switch_video_frames)} must increase strictly inside "
                         f"0..{total_video_frames}")
    out = [b - a for a, b in zip(bounds, bounds[1:])]
    for i, n in enumerate(out):
        first = i == 0
        one_chunk = video_frames(chunk_frames, from_start=first, opens_clip=switches_open_clips, stride=stride)
        per_chunk = stride * chunk_frames
        if n < one_chunk or (n - one_chunk) % per_chunk:
            fit = one_chunk + per_chunk * max(0, round((n - one_chunk) / per_chunk))
            raise ValueError(f"segment {i + 1} has {n} video frames; with chunks of {chunk_frames} latent frames it "
                             f"needs {one_chunk} + a multiple of {per_chunk} (e.g. {fit})")
    return out


# -- a stream's requests: what a state needs for so many frames ------------------------------------------------------


def chunks_for(state: StreamState, latent_frames: int) -> int:
    """Number of chunks needed for ``latent_frames`` (rounded up to whole chunks, at least one)."""
    c = state.settings.chunk_frames
    if isinstance(latent_frames, bool) or not isinstance(latent_frames, numbers.Integral):
        raise ValueError(
            f"latent_frames must be a whole number of latent frames, got {latent_frames!r} "
            f"({type(latent_frames).__name__}); pass an int, e.g. {c} for one chunk"
        )
    if latent_frames < 1:
        raise ValueError(f"frames must be at least one chunk ({c} latent frames), got {latent_frames}")
    return -(-latent_frames // c)


def latent_frames_for(state: StreamState, video_frames: int) -> int:
    """Latent frames to generate for at least ``video_frames`` more video frames from ``state``
    (:func:`latent_frames_covering`: the stream's first latent frame is one video frame, a later clip's none, every
    other one ``temporal_stride``); :func:`~chameleon_core.streaming.generate` then rounds up to whole chunks. Fewer
    video frames than one chunk shows raise ValueError (naming the minimum).
    """
    family, c = state.model.config.latent, state.settings.chunk_frames
    first, opens = state.latent_frames == 0, state.opens_clip
    one_chunk = family.video_frames(c, from_start=first, opens_clip=opens)
    if video_frames < one_chunk:
        where = ("at the start of a stream" if first else "after a garment switch that starts a new clip, whose "
                 "first latent frame is not shown" if opens else "after the start")
        raise ValueError(
            f"{video_frames} video frames are fewer than one chunk ({c} latent frames = {one_chunk} video frames "
            f"{where}); use at least {one_chunk}"
        )
    return latent_frames_covering(video_frames, from_start=first, opens_clip=opens, stride=family.temporal_stride)
