"""The frame arithmetic (``chameleon_core/frames.py``) against what a real causal VAE does: frame counts of whole and
chunked decodes, latent counts of encodes, and the stream's rounding to whole chunks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from chameleon_core import frames
from chameleon_core.config import StreamSettings
from chameleon_core.decoding import StreamingDecoder
from chameleon_core.latents import WAN22
from chameleon_core.vae import build_vae


@pytest.fixture(scope="module")
def vae():
    return build_vae("wan2.2-tiny", seed=0)


def _latents(n: int) -> torch.Tensor:
    return torch.randn(1, 48, n, 2, 2, generator=torch.Generator().manual_seed(n))


def test_video_frames_are_what_the_decoder_makes_from_the_start_and_continuing(vae):
    for n in (1, 2, 5):
        whole = vae.decode(_latents(n))
        assert whole.shape[2] == frames.video_frames(n) == WAN22.video_frames(n)
        _, state = vae.decode_chunk(_latents(2))
        more, _ = vae.decode_chunk(_latents(n), state)
        assert more.shape[2] == frames.video_frames(n, from_start=False) == WAN22.video_frames(n, from_start=False)
    assert frames.video_frames(0) == 0


def test_latent_frames_are_what_the_encoder_makes(vae):
    for v in (1, 5, 9, 17):
        video = torch.rand(1, 3, v, 32, 32) * 2 - 1
        assert vae.encode(video).shape[2] == frames.latent_frames(v) == WAN22.latent_frames(v)
        assert frames.is_whole_video(v) and frames.whole_video_at_most(v) == v
    assert not frames.is_whole_video(10) and frames.whole_video_at_most(10) == 9 and frames.whole_video_at_most(0) == 1


def test_chunk_ranges_are_the_pixels_each_chunk_of_a_streaming_decode_makes(vae):
    latents = _latents(8)
    decoder = StreamingDecoder(vae)
    ranges, at = [], 0
    for pixels in decoder.catch_up(latents, 3):
        ranges.append(range(at, at + pixels.shape[2]))
        at += pixels.shape[2]
    assert ranges == frames.chunk_video_ranges(8, 3) == [range(0, 9), range(9, 21), range(21, 29)]
    assert [frames.chunk_first_video_frame(k, 3) for k in range(3)] == [r.start for r in ranges]
    per_latent = frames.chunk_video_ranges(8, 1)
    assert per_latent == [frames.latent_frame_video_range(j) for j in range(8)]
    assert per_latent[:3] == [range(0, 1), range(1, 5), range(5, 9)]


@pytest.mark.parametrize("from_start", [True, False])
def test_covering_is_the_fewest_latent_frames_that_show_the_video(from_start):
    for v in range(1, 60):
        n = frames.latent_frames_covering(v, from_start=from_start)
        assert frames.video_frames(n, from_start=from_start) >= v
        assert frames.video_frames(n - 1, from_start=from_start) < v


def test_landing_chunk_is_the_first_boundary_at_or_after_the_frame():
    for v in range(1, 60):
        k = frames.landing_chunk(v, 3)
        assert k >= 1 and frames.chunk_first_video_frame(k, 3) >= v
        assert k == 1 or frames.chunk_first_video_frame(k - 1, 3) < v


def _state(latent_frames: int, chunk_frames: int = 3, opens_clip: bool = False) -> SimpleNamespace:
    """What latent_frames_for reads of a stream state."""
    return SimpleNamespace(latent_frames=latent_frames, settings=StreamSettings(chunk_frames=chunk_frames),
                           opens_clip=opens_clip, model=SimpleNamespace(config=SimpleNamespace(latent=WAN22)))


def test_a_generate_rounds_up_to_whole_chunks_never_down():
    # 10 video frames at the start: 3 latent frames show 9, so two chunks (21 frames); the floor would give 9
    assert frames.chunks_for(_state(0), frames.latent_frames_for(_state(0), 10)) == 2
    for start in (0, 6):
        for v in range(frames.video_frames(3, from_start=start == 0), 80):
            made = frames.chunks_for(_state(start), frames.latent_frames_for(_state(start), v)) * 3
            assert WAN22.video_frames(made, from_start=start == 0) >= v
    with pytest.raises(ValueError, match="fewer than one chunk .* use at least 12"):
        frames.latent_frames_for(_state(6), 11)
    # after a switch that started a new clip a chunk shows 8 frames: 8 is one chunk, 9 two
    assert frames.chunks_for(_state(9, opens_clip=True), frames.latent_frames_for(_state(9, opens_clip=True), 8)) == 1
    assert frames.chunks_for(_state(9, opens_clip=True), frames.latent_frames_for(_state(9, opens_clip=True), 9)) == 2
    with pytest.raises(ValueError, match="fewer than one chunk .*new clip.* use at least 8"):
        frames.latent_frames_for(_state(9, opens_clip=True), 7)


def test_a_new_clip_shows_what_a_restarted_decode_shows_less_its_first_frame(vae):
    """The frame counts of a stream with later clips against the decoder itself: a clip start restarts the decode
    (a fresh whole-video decode of the clip's latents) and its first frame is not shown."""
    latents = _latents(12)
    decoder = StreamingDecoder(vae)
    pieces = list(decoder.catch_up(latents, 3, clip_starts=(6, 9)))
    shown = [p.shape[2] for p in pieces]
    assert shown == [9, 12, 8, 8]
    assert frames.chunk_video_ranges(12, 3, clip_starts=(6, 9)) == [range(0, 9), range(9, 21), range(21, 29),
                                                                   range(29, 37)]
    assert frames.stream_video_frames(0, 12, (6, 9)) == 37 == frames.video_frames(12) - 2 * 4
    assert frames.stream_video_frames(6, 12, (6, 9)) == 16 == 2 * frames.video_frames(3, opens_clip=True,
                                                                                       from_start=False)
    # independent computation: each clip decoded alone as a new video, its first frame dropped
    alone = [vae.decode(latents[:, :, a:b]) for a, b in ((0, 6), (6, 9), (9, 12))]
    expected = torch.cat([alone[0], alone[1][:, :, 1:], alone[2][:, :, 1:]], dim=2)
    torch.testing.assert_close(torch.cat(pieces, dim=2), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(decoder.last_frame, pieces[-1][:, :, -1])
    for v in range(1, 40):
        n = frames.latent_frames_covering(v, from_start=False, opens_clip=True)
        assert frames.video_frames(n, from_start=False, opens_clip=True) >= v
        assert frames.video_frames(n - 1, from_start=False, opens_clip=True) < v


def test_segments_replayed_from_chunk_starts_make_exactly_their_chunks():
    """A live session's timeline replayed as generate nodes: each asks for exactly its chunks, none extra."""
    starts, chunks = [0, 2, 5], 6
    video = frames.segment_video_frames(starts, chunks, 3)
    assert video == [21, 36, 12]
    at = 0
    for (a, b), v in zip(zip(starts, [*starts[1:], chunks]), video):
        assert frames.chunks_for(_state(at), frames.latent_frames_for(_state(at), v)) == b - a
        at += (b - a) * 3
    with pytest.raises(ValueError, match="segment 2 has no chunks"):
        frames.segment_video_frames([0, 3], 3, 3)
    assert frames.segment_video_frames(starts, chunks, 3, clip_chunks={5}) == [21, 36, 8]


def test_whole_chunk_segments_name_the_segment_and_a_count_that_fits():
    assert frames.whole_chunk_segments(69, (21, 45), 3) == [21, 24, 24]
    with pytest.raises(ValueError, match=r"segment 2 has 25 video frames; .* needs 12 \+ a multiple of 12 \(e.g. 24\)"):
        frames.whole_chunk_segments(70, (45,), 3)
    with pytest.raises(ValueError, match="increase strictly"):
        frames.whole_chunk_segments(69, (45, 21), 3)
    assert frames.whole_chunk_segments(61, (21, 41), 3, switches_open_clips=True) == [21, 20, 20]
    with pytest.raises(ValueError, match=r"segment 2 has 24 video frames; .* needs 8 \+ a multiple of 12 \(e.g. 20\)"):
        frames.whole_chunk_segments(69, (21, 45), 3, switches_open_clips=True)
