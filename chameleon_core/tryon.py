"""Try-on onto a long person video: VITON-DiT's interpolated autoregression on the streaming student.

A long video streamed chunk by chunk drifts: the garment is re-derived from the last few chunks again and again.
VITON-DiT generates *keyframes* first, far apart in time, then fills each segment between them autoregressively
from its keyframe, so every segment is anchored to a frame made with the whole video's garment in view.

Here, with ``segment_chunks`` chunks per segment (the source's chunks ``0 .. N-1``):

1. **Keyframes.** One stream (the given state's conditions) over a *keyframe video*: the source's first chunk of
   every segment, in order. Each keyframe chunk is SDEdited from its source chunk at ``strength`` (inside the
   mask) and attends, through the KV cache, to the keyframes before it, so the keyframes agree with each other.
   (Their RoPE positions are consecutive: the student only knows frame spacing of one; the gap in the video is
   not told to it.)
2. **Fill.** Each segment is a fresh stream from the same start state. "From its keyframe" means: the segment's
   first chunk *is* its keyframe chunk, copied (strength 0: no denoising step; the clean pass writes its keys into
   the sink), so every later chunk of the segment attends to the keyframe as its sink; the segment's later chunks
   are SDEdited from the source at ``strength`` as in the plain try-on.

Both passes run the one session loop (:class:`~chameleon_core.session.Session`, latents only) and the one chunk
step; segments do not depend on each other (a multi-GPU run could fill them in parallel). A garment change
mid-video uses the plain streamed try-on (a :class:`~chameleon_core.stream_options.SourceVideo` on a stream, switched
with the three rescheduling operations); this function dresses the whole video in the start state's garment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .session import Session
from .stream_options import SourceVideo, check_strength, with_options
from .streaming import StreamState

logger = logging.getLogger(__name__)


def _run(state: StreamState, source: SourceVideo, chunks: int, should_stop: Callable[[], bool] | None,
         on_chunk: Callable[[], None] | None) -> tuple[torch.Tensor, bool]:
    """Run ``chunks`` chunks of ``state`` with ``source`` through the session loop; the latents and whether it
    finished (False: stopped)."""
    session = Session(with_options(state, source=source), chunks=chunks, decode=False, should_stop=should_stop)
    out = []
    for chunk in session:
        out.append(chunk.latents)
        if on_chunk is not None:
            on_chunk()
    if not out:
        b, ch, _, h, w = source.latents.shape
        return torch.zeros(b, ch, 0, h, w), False
    return torch.cat(out, dim=2), not session.stopped and len(out) == chunks


def keyframe_then_fill(
    state: StreamState,
    video: torch.Tensor,
    *,
    segment_chunks: int,
    strength: float = 0.9375,
    mask: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dress a long video: keyframes at the segment starts first, then each segment filled from its keyframe.

    state: a stream at frame 0 (after :func:`~chameleon_core.streaming.start_stream`; its condition weights and
    local window apply). video: model-space source latents ``[B, C, T, h, w]``; the whole chunks of it are used
    (``T // chunk`` of them). mask: as :class:`~chameleon_core.stream_options.SourceVideo`'s (``[.., T or 1, h, w]``).
    progress(done, total) after every chunk (keyframes + fill). A stop (``should_stop``) ends early and returns the
    segments finished so far. Returns ``(latents [B, C, chunks * chunk, h, w], keyframes [B, C, K * chunk, h, w])``.
    """
    c = state.settings.chunk_frames
    if state.latent_frames != 0:
        raise ValueError(f"keyframe_then_fill starts from a fresh stream (frame 0), got one at frame {state.latent_frames}; "
                         "connect the stream start directly")
    check_strength(strength)
    if isinstance(segment_chunks, bool) or not isinstance(segment_chunks, int) or segment_chunks < 1:
        raise ValueError(f"segment_chunks must be an integer >= 1, got {segment_chunks!r}")
    chunks = video.shape[2] // c
    if chunks < 1:
        raise ValueError(f"the video has {video.shape[2]} latent frames, fewer than one chunk ({c}); give a longer "
                         "video")
    starts = list(range(0, chunks, segment_chunks))
    total = len(starts) + chunks
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    def frames_of(chunk_ids: list[int], x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :, k * c : (k + 1) * c] for k in chunk_ids], dim=2)

    def mask_of(chunk_ids: list[int]) -> torch.Tensor | None:
        if mask is None or mask.shape[2] == 1:
            return mask
        return frames_of(chunk_ids, mask)

    # 1. Keyframes: the first source chunk of every segment, as one stream.
    key_source = SourceVideo(frames_of(starts, video), strength, mask_of(starts))
    keyframes, finished = _run(state, key_source, len(starts), should_stop, tick)
    logger.info("try-on: %d keyframe chunks for %d segments of %d chunks", len(starts), len(starts), segment_chunks)
    segments = []
    # 2. Fill each segment from its keyframe (copied as the segment's first chunk, then SDEdit of the source).
    for n, first in enumerate(starts):
        if not finished:
            break
        ids = list(range(first, min(first + segment_chunks, chunks)))
        src = torch.cat([keyframes[:, :, n * c : (n + 1) * c], frames_of(ids[1:], video)], dim=2) if len(ids) > 1 \
            else keyframes[:, :, n * c : (n + 1) * c]
        seg_source = SourceVideo(src, (0.0,) + (float(strength),) * (len(ids) - 1), mask_of(ids))
        seg, finished = _run(state, seg_source, len(ids), should_stop, tick)
        segments.append(seg)
    b, ch, _, h, w = video.shape
    latents = torch.cat(segments, dim=2) if segments else torch.zeros(b, ch, 0, h, w)
    return latents, keyframes
