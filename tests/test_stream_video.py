"""A switch chain in the node graph decodes each chunk once: the video segments the streams carry
(``chameleon_core.decoding.VideoSegment``, through ``nodes/adapters/segments.py`` as the Generate, Garment Switch and
Stream Decode nodes call it) against the core's switch that decodes the whole stream so far at every switch.

The chain is what ``garment_switch_chain`` grows into: Start -> (Generate -> Garment Switch) x N -> Generate -> Stream
Decode of every segment (joined, as more than eight need Segment Join). Counted: latent frames through the VAE's
decoder. Compared: the switched streams and the decoded video, bit for bit, with the core's own computation.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from comfyui_fashionchameleon.chameleon_core.config import StreamSettings
from comfyui_fashionchameleon.chameleon_core.decoding import StreamingDecoder, VideoSegment, decode_chunks
from comfyui_fashionchameleon.chameleon_core.random_models import random_transformer
from comfyui_fashionchameleon.chameleon_core.rescheduling import switch_garment
from comfyui_fashionchameleon.chameleon_core.session import encode_condition
from comfyui_fashionchameleon.chameleon_core.streaming import generate, start_stream
from comfyui_fashionchameleon.chameleon_core.vae import build_vae
from comfyui_fashionchameleon.nodes.adapters.segments import (
    SEGMENT_KEY,
    decoded_pieces,
    join_segments,
    last_decoded_frame,
    next_video_segment,
    segment_latent,
)
from comfyui_fashionchameleon.nodes.adapters.vae import CODEC_ATTRIBUTE, ComfyCodec
from comfyui_fashionchameleon.nodes.types import ChameleonStream

from tests.comfy_fakes import ComfyLikeVAE

SIZE = 32  # pixels: 2x2 latents of the Wan2.2 VAE
CHUNK = 1  # latent frames per chunk: the smallest stream, so a long chain stays fast


class CountingCodec(ComfyCodec):
    """The nodes' codec, counting the latent frames it decodes."""

    decoded = 0

    def decode_chunk(self, latents, state=None, **kwargs):
        self.decoded += latents.shape[2]
        return super().decode_chunk(latents, state, **kwargs)


@pytest.fixture(scope="module")
def parts():
    model = random_transformer(seed=0)
    vae = build_vae("wan2.2-tiny", seed=0)
    gen = torch.Generator().manual_seed(5)
    images = [torch.rand(1, SIZE, SIZE, 3, generator=gen) for _ in range(12)]
    context = torch.randn(1, 5, model.config.text_dim, generator=gen)
    return model, vae, images, context


def _codec(vae) -> CountingCodec:
    comfy = ComfyLikeVAE(vae)
    codec = CountingCodec(comfy)
    setattr(comfy, CODEC_ATTRIBUTE, codec)  # what vae_codec(comfy) returns: the nodes' codec of this VAE
    return codec


def _start(model, codec, images, context) -> ChameleonStream:
    family = model.config.latent
    ref, garment = (encode_condition(codec, family, images[i], garment=i == 1, size=(SIZE, SIZE)) for i in (0, 1))
    state = start_stream(model, context=context, reference=ref, garment=garment, seed=3,
                         settings=StreamSettings(chunk_frames=CHUNK, cache_frames=2 + 1 + 2, steps=1))
    return ChameleonStream(state, model=None)


def _generate(stream: ChameleonStream, chunks: int) -> tuple[ChameleonStream, dict]:
    """What Stream Generate does with the session's latents."""
    state, latents = generate(stream.state, chunks * CHUNK)
    out = stream.with_state(state, video=next_video_segment(stream, state.model.config.latent.to_raw(latents)))
    return out, segment_latent(out)


def _switch(stream: ChameleonStream, codec, image) -> ChameleonStream:
    """What Garment Switch does (refresh, withdraw, disentangle)."""
    garment = encode_condition(codec, stream.state, image, garment=True)
    last = last_decoded_frame(stream, codec, stream.state.settings.chunk_frames)
    return stream.with_state(switch_garment(stream.state, garment, codec=codec, last_frame=last))


def _chain(parts, switches: int):
    model, vae, images, context = parts
    codec = _codec(vae)
    stream, segments = _start(model, codec, images, context), []
    for k in range(switches):
        stream, seg = _generate(stream, 1 + k % 2)
        segments.append(seg)
        stream = _switch(stream, codec, images[2 + k % 10])
    stream, seg = _generate(stream, 2)
    segments.append(seg)
    after_switches = codec.decoded
    joined = segments[0]
    for seg in segments[1:]:  # Segment Join, then Stream Decode
        joined = join_segments("N", model.config.latent, [("first", joined), ("second", seg)])
    pixels = torch.cat([p for _, p in decoded_pieces(joined, codec, 3)], dim=2)
    return stream, joined, pixels, codec, after_switches


def test_a_switch_chain_decodes_every_latent_frame_once(parts):
    stream, joined, pixels, codec, after_switches = _chain(parts, 10)
    total = stream.state.latent_frames
    # the switches decoded the video up to the last switch, once; Stream Decode only what came after it
    assert after_switches == total - 2 * CHUNK
    assert codec.decoded == total
    # linear: a chain of half the switches decodes its own frames, once
    half = _chain(parts, 5)
    assert half[3].decoded == half[0].state.latent_frames
    # the video is the continuous decode of every segment (what one decode of the joined latents gives)
    clips = joined[SEGMENT_KEY]["clip_starts"]  # every switch started a new clip: the decode restarts there
    assert len(clips) == 10
    whole = torch.cat(list(decode_chunks(parts[1], joined["samples"], 3, clip_starts=clips)), dim=2)
    torch.testing.assert_close(pixels, whole, atol=0, rtol=0)


def test_a_latent_changed_on_the_way_still_restarts_its_decode_at_the_clip_starts(parts):
    """A LATENT whose samples another node changed decodes without the segments' decodes, from the clip starts its
    position info records: as one decode of those samples with the clips (first frames hidden), and a lone segment
    that opens a clip shows one latent frame less."""
    stream, joined, _, _, _ = _chain(parts, 3)
    changed = {**joined, "samples": joined["samples"] * 1.01}
    clips = joined[SEGMENT_KEY]["clip_starts"]
    pieces = list(decoded_pieces(changed, parts[1], 3))
    assert torch.equal(torch.cat([lat for lat, _ in pieces], dim=2), changed["samples"])
    expected = torch.cat(list(decode_chunks(parts[1], changed["samples"], 3, clip_starts=clips)), dim=2)
    torch.testing.assert_close(torch.cat([p for _, p in pieces], dim=2), expected, atol=0, rtol=0)
    last = stream.video  # the chain's last segment: 2 latent frames opening a clip
    lone = {"samples": last.latents * 1.01, SEGMENT_KEY: {"stream": "s", "latent_start": last.start,
                                                          "latent_frames": 2, "clip_starts": last.clip_starts}}
    assert last.clip_starts == (last.start,)
    assert sum(p.shape[2] for _, p in decoded_pieces(lone, parts[1], 3)) == 4


def test_the_switches_equal_the_cores_switch_that_decodes_the_whole_stream(parts):
    model, vae, images, context = parts
    stream, _, _, codec, after_switches = _chain(parts, 4)
    # the core's own path: every switch decodes the whole stream so far (no last frame handed over)
    full = _codec(vae)
    core = _start(model, full, images, context)
    for k in range(4):
        core = _generate(core, 1 + k % 2)[0]
        garment = encode_condition(full, core.state, images[2 + k % 10], garment=True)
        core = core.with_state(switch_garment(core.state, garment, codec=full))
    core = _generate(core, 2)[0]
    assert torch.equal(stream.state.latents(), core.state.latents())
    assert torch.equal(stream.state.reference, core.state.reference)
    assert (after_switches, full.decoded) == (6, 1 + 3 + 4 + 6)  # once, against the stream so far at every switch


def test_two_branches_after_a_switch_decode_only_their_own_frames(parts):
    model, vae, images, context = parts
    codec = _codec(vae)
    stream, _ = _generate(_start(model, codec, images, context), 3)
    stream = _switch(stream, codec, images[2])
    assert codec.decoded == 3
    a, _ = _generate(stream, 1)
    b, _ = _generate(dataclasses.replace(stream, state=stream.state), 2)  # a second Generate off the same switch
    frame_a = last_decoded_frame(a, codec, CHUNK)
    frame_b = last_decoded_frame(b, codec, CHUNK)
    assert codec.decoded == 3 + 1 + 2 and not torch.equal(frame_a, frame_b)
    latents_b = torch.cat([stream.video.latents, b.video.latents], dim=2)
    assert b.video.clip_starts == (3,)  # the switch started a new clip: the decode restarts there
    whole = torch.cat(list(decode_chunks(vae, latents_b, CHUNK, clip_starts=(3,))), dim=2)
    torch.testing.assert_close(frame_b, whole[:, :, -1], atol=0, rtol=0)


def test_a_latent_changed_on_the_way_is_decoded_as_given(parts):
    model, vae, images, context = parts
    codec = _codec(vae)
    stream, seg = _generate(_start(model, codec, images, context), 2)
    _switch(stream, codec, images[2])  # decodes the segment
    changed = {**seg, "samples": seg["samples"] * 0.5}  # a latent multiply between Generate and Stream Decode
    pixels = torch.cat([p for _, p in decoded_pieces(changed, codec, 3)], dim=2)
    want = torch.cat(list(decode_chunks(vae, changed["samples"], 3)), dim=2)
    torch.testing.assert_close(pixels, want, atol=0, rtol=0)


def test_a_remembered_decode_is_continued(parts):
    """The live node hands its session's decode to the stream it outputs: the next segment continues it."""
    model, vae, images, context = parts
    codec = _codec(vae)
    stream, _ = _generate(_start(model, codec, images, context), 2)
    session_decoder = StreamingDecoder(codec)
    first = torch.cat(list(session_decoder.catch_up(stream.video.latents, CHUNK)), dim=2)
    live = VideoSegment(stream.video.latents, 0)
    live.remember(codec, first, session_decoder)
    stream = dataclasses.replace(stream, video=live)
    before = codec.decoded
    more, seg = _generate(stream, 1)
    pieces = list(decoded_pieces(join_segments("N", model.config.latent, [("first", segment_latent(stream)),
                                                                          ("second", seg)]), codec, CHUNK))
    assert codec.decoded == before + 1
    whole = torch.cat(list(decode_chunks(vae, torch.cat([live.latents, more.video.latents], dim=2), CHUNK)), dim=2)
    torch.testing.assert_close(torch.cat([p for _, p in pieces], dim=2), whole, atol=0, rtol=0)
