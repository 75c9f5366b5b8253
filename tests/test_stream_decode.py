"""Stream Decode cannot be fed wrong: the checks of ``join_segments`` / ``latent_segments`` without ComfyUI.

Segments carry where they start in their stream (``segment_latent``); gaps, overlaps, wrong order, segments
of different streams and a VAE of the other latent family are refused with the input named, the latent frames or
shapes shown and the fix. The real-ComfyUI side (Generate's outputs through the decode node, the chain of joins, the
model-managed VAE) is in ``test_comfyui_integration.py``.
"""

from __future__ import annotations

import pytest
import torch
from comfyui_fashionchameleon.chameleon_core.latents import latent_family
from comfyui_fashionchameleon.chameleon_core.decoding import VideoSegment
from comfyui_fashionchameleon.nodes.adapters.segments import (
    SEGMENT_KEY,
    join_segments,
    latent_segments,
    segment_latent,
)

FAMILY = latent_family(48)


class _Stream:  # what segment_latent reads of a ChameleonStream
    def __init__(self, origin: str, video: VideoSegment) -> None:
        self.origin, self.video = origin, video


def _segments(origin: str, lengths: list[int]) -> list[dict]:
    out, start, video = [], 0, None
    for i, n in enumerate(lengths):
        video = VideoSegment(torch.full((1, 48, n, 2, 2), float(i)), start, video)
        out.append(segment_latent(_Stream(origin, video)))
        start += n
    return out


def _named(*segs: dict) -> dict[str, dict]:
    return {f"segment_{i}": s for i, s in enumerate(segs, start=1)}


def test_consecutive_segments_join_in_stream_order():
    a, b, c = _segments("s", [3, 6, 3])
    joined = latent_segments("N", FAMILY, _named(a, b, c))["samples"]
    torch.testing.assert_close(joined, torch.cat([a["samples"], b["samples"], c["samples"]], dim=2))
    one = join_segments("N", FAMILY, [("first", a), ("second", b)])
    videos = a[SEGMENT_KEY]["video"] + b[SEGMENT_KEY]["video"]
    assert one[SEGMENT_KEY] == {"stream": "s", "latent_start": 0, "latent_frames": 9, "clip_starts": (),
                                "video": videos}
    # a joined segment chains on: any number of segments, then decoded like one
    two = join_segments("N", FAMILY, [("first", one), ("second", c)])
    torch.testing.assert_close(two["samples"], joined)


def test_a_gap_is_refused_with_the_frames_named():
    a, _, c = _segments("s", [3, 6, 3])
    with pytest.raises(ValueError, match=r"N: input 'segment_2' got 'latent frames 9..11': a gap: segment_1 ends at "
                                         r"latent frame 2, segment_2 starts at 9\. Fix: .*starting at latent frame 3"):
        latent_segments("N", FAMILY, _named(a, c))


def test_wrong_order_and_repeats_are_refused():
    a, b, _ = _segments("s", [3, 6, 3])
    with pytest.raises(ValueError, match=r"input 'segment_2' got 'latent frames 0..2': out of order or repeated"):
        latent_segments("N", FAMILY, _named(b, a))
    with pytest.raises(ValueError, match=r"input 'segment_2'.*out of order or repeated.*Fix: connect the segments in "
                                         r"stream order"):
        latent_segments("N", FAMILY, _named(a, a))


def test_segments_of_two_streams_are_refused():
    a, _ = _segments("one", [3, 3])
    _, b = _segments("two", [3, 3])
    with pytest.raises(ValueError, match=r"input 'segment_2'.*comes from another stream than segment_1.*Fix: decode "
                                         r"the segments of one stream together"):
        latent_segments("N", FAMILY, _named(a, b))


def test_a_latent_without_position_joins_alone_but_not_mixed_with_stream_segments():
    plain = {"samples": torch.zeros(1, 48, 2, 2, 2)}
    a, _ = _segments("s", [3, 3])
    assert latent_segments("N", FAMILY, _named(plain, {"samples": torch.ones(1, 48, 1, 2, 2)}))["samples"].shape[2] == 3
    with pytest.raises(ValueError, match=r"input 'segment_2' got 'a LATENT with no stream position': mixed"):
        latent_segments("N", FAMILY, _named(a, plain))


def test_the_other_familys_vae_is_blamed_with_the_shapes_not_the_segment():
    wan21 = latent_family(16)
    a, b = _segments("s", [3, 3])
    with pytest.raises(ValueError, match=r"N: input 'vae' got 'a wan2.1 VAE \(16 latent channels\)': the segments "
                                         r"hold wan2.2 latents \(segment_1 \(1, 48, 3, 2, 2\), segment_2 \(1, 48, 3, "
                                         r"2, 2\)\)\. Fix: connect the wan2.2 VAE"):
        latent_segments("N", wan21, _named(a, b))
    # a segment that is not a latent at all: its type, never a bare 'tuple' without context
    with pytest.raises(ValueError, match=r"input 'segment_1' got 'tuple': expected a wan2.2 video latent"):
        latent_segments("N", FAMILY, {"segment_1": (1, 2)})
    with pytest.raises(ValueError, match=r"input 'segment_1' got 'segment_1 \(1, 48, 3, 2, 2\), segment_2 \(1, 48, 3, "
                                         r"4, 4\)': the segments differ in batch, channels or size"):
        latent_segments("N", FAMILY, _named(a, {"samples": torch.zeros(1, 48, 3, 4, 4)}))
