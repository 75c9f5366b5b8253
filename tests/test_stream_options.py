"""The stream's options (issue 16) against independent computations: condition weighting (a logit bias on the
condition keys), frame-local attention (a full forward under the equivalent boolean mask), and the source video
(SDEdit start, mask, keyframe-then-fill). Tiny fp32 model on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from chameleon_core.attention import (
    FullAttention,
    attention_with_key_bias,
    frame_block_mask,
    local_frame_mask,
)
from chameleon_core.cache import CacheGeometry, KVCache
from chameleon_core.causal import chunk_forward, prefill_conditions
from chameleon_core.chunk_step import denoise_chunk
from chameleon_core.config import StreamSettings
from chameleon_core.stream_options import (
    ChunkSource,
    SourceVideo,
    condition_weight_schedule,
    latent_mask,
    start_step_for_strength,
)
from chameleon_core.samplers import sample_teacher
from chameleon_core.schedules import model_timestep, student_timesteps, teacher_sigmas
from chameleon_core.session import GarmentSwitch, Session, TimedSwitch
from chameleon_core.stream_options import with_options
from chameleon_core.streaming import generate, start_stream
from tests.tiny_models import tiny_transformer
from chameleon_core.tryon import keyframe_then_fill

H, W = 4, 4
TPF = (H // 2) * (W // 2)
ATOL = 2e-4
TS = student_timesteps(5.0)


@pytest.fixture(scope="module")
def model():
    return tiny_transformer(0)


@pytest.fixture(scope="module")
def inputs(model):
    g = torch.Generator().manual_seed(11)
    c = model.config.in_dim
    return {
        "ref": torch.randn(1, c, 1, H, W, generator=g),
        "gar": torch.randn(1, c, 1, H, W, generator=g),
        "ctx": torch.randn(1, 5, model.config.text_dim, generator=g),
        "video": torch.randn(1, c, 12, H, W, generator=g),
    }


def _start(model, inputs, **settings):
    s = StreamSettings(chunk_frames=2, cache_frames=12, **settings)
    return start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=5,
                        settings=s)


class HandBiasAttention:
    """Attention written out: softmax(q k^T / sqrt(d) + bias on the condition keys for video queries) v."""

    def __init__(self, mask, bias, cond_tokens):
        self.mask, self.bias, self.n = mask, bias, cond_tokens

    def attend(self, layer, q, k, v, backend=None):
        logits = torch.einsum("blhd,bmhd->bhlm", q.double(), k.double()) / math.sqrt(q.shape[-1])
        add = torch.zeros(logits.shape[-2:], dtype=torch.float64)
        add[self.n :, : self.n] = self.bias
        logits = logits + add
        if self.mask is not None:
            logits = logits.masked_fill(~self.mask, float("-inf"))
        return torch.einsum("bhlm,bmhd->blhd", logits.softmax(-1), v.double()).to(q.dtype)


# -- condition weighting --------------------------------------------------------------------------------------


def test_key_bias_attention_equals_hand_softmax():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 8, generator=g) for _ in range(3))
    bias = torch.tensor([-2.0, -2.0, 0.0, 0.0, 1.0, 0.0, 0.0])[: k.shape[1]]
    mask = torch.rand(5, 5, generator=g) > 0.3
    mask[:, 0] = True
    got = attention_with_key_bias(q, k, v, bias, mask)
    logits = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(8) + bias
    want = torch.einsum("bhlm,bmhd->blhd", logits.masked_fill(~mask, float("-inf")).softmax(-1), v)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@torch.no_grad()
def test_full_forward_bias_equals_hand_attention_and_zero_is_plain(model, inputs):
    video = inputs["video"][:, :, :4]
    t = torch.tensor([700.0])
    text = model.prepare_text(inputs["ctx"])
    plain = model(video, t, text, reference=inputs["ref"], garment=inputs["gar"])
    assert torch.equal(plain, model(video, t, text, reference=inputs["ref"], garment=inputs["gar"],
                                    condition_bias=None))
    biased = model(video, t, text, reference=inputs["ref"], garment=inputs["gar"], condition_bias=-3.0)
    seq = torch.cat([inputs["ref"], inputs["gar"], video], dim=2)
    frame_t = torch.tensor([[0.0, 0.0] + [700.0] * 4])
    hand = model.forward_frames(seq, frame_t, 0, text, HandBiasAttention(None, -3.0, 2 * TPF))[:, :, 2:]
    torch.testing.assert_close(biased, hand, atol=ATOL, rtol=0)
    assert not torch.allclose(biased, plain, atol=1e-3)  # the bias changes the output: the check has teeth


@torch.no_grad()
def test_cached_chunk_bias_equals_block_causal_forward_with_hand_bias(model, inputs):
    settings = StreamSettings(chunk_frames=2, cache_frames=12)
    cache = KVCache.empty(model.config, CacheGeometry(settings, TPF))
    text = model.prepare_text(inputs["ctx"])
    prefill_conditions(model, cache, text, inputs["ref"], inputs["gar"])
    video, t = inputs["video"][:, :, :6], torch.full((1, 6), 600.0)
    outs = []
    for k in range(3):
        slots = cache.reserve(2, 2 + 2 * k)
        outs.append(chunk_forward(model, cache, text, video[:, :, 2 * k : 2 * k + 2], t[:, :2], slots,
                                  condition_bias=1.5))
    seq = torch.cat([inputs["ref"], inputs["gar"], video], dim=2)
    frame_t = torch.cat([torch.zeros(1, 2), t], dim=1)
    plan = HandBiasAttention(frame_block_mask(2, 6, 2, TPF), 1.5, 2 * TPF)
    full = model.forward_frames(seq, frame_t, 0, text, plan)[:, :, 2:]
    torch.testing.assert_close(torch.cat(outs, 2), full, atol=ATOL, rtol=0)


@torch.no_grad()
def test_stream_weights_zero_are_bit_identical_and_nonzero_change_output(model, inputs):
    state = _start(model, inputs)
    _, plain = generate(state, 4)
    _, zero = generate(with_options(state, condition_weights=(0.0,) * 4), 4)
    assert torch.equal(plain, zero)
    _, weak = generate(with_options(state, condition_weights=condition_weight_schedule(4, -4.0)), 4)
    assert not torch.allclose(weak, plain, atol=1e-3)


@torch.no_grad()
def test_teacher_weights_zero_are_bit_identical_and_bias_follows_the_model(model, inputs):
    kw = {"positive": inputs["ctx"], "negative": None, "reference": inputs["ref"], "garment": inputs["gar"],
          "latent_frames": 2, "steps": 3, "cfg": 1.0, "sampler": "euler", "seed": 2}
    plain = sample_teacher(model, **kw)
    assert torch.equal(plain, sample_teacher(model, condition_weights=[0.0, 0.0, 0.0], **kw))
    # One Euler step with a bias equals the hand-biased forward's x0 (steps=1 lands on sigma 0: x0 = x - sigma v).
    one = sample_teacher(model, **{**kw, "steps": 1}, condition_weights=[-2.0])
    x = torch.randn((1, model.config.in_dim, 2, H, W), generator=torch.Generator().manual_seed(2))
    sigma = float(teacher_sigmas(1, 5.0)[0])
    t_fed = float(model_timestep(sigma * 1000, model.dtype))
    text = model.prepare_text(inputs["ctx"])
    seq = torch.cat([inputs["ref"], inputs["gar"], x], dim=2)
    v = model.forward_frames(seq, torch.tensor([[0.0, 0.0, t_fed, t_fed]]), 0, text,
                             HandBiasAttention(None, -2.0, 2 * TPF))[:, :, 2:]
    torch.testing.assert_close(one, x - sigma * v, atol=ATOL, rtol=0)


def test_schedules_and_bad_weights(model, inputs):
    assert condition_weight_schedule(4, -3.0) == (-3.0, -2.0, -1.0, 0.0)
    assert condition_weight_schedule(4, -3.0, ramp="step") == (-3.0, -3.0, 0.0, 0.0)
    c = condition_weight_schedule(5, -2.0, ramp="cosine")
    assert c[0] == -2.0 and c[-1] == 0.0 and c[2] == pytest.approx(-1.0)
    state = _start(model, inputs)
    with pytest.raises(ValueError, match="3 values but this stream runs 4"):
        with_options(state, condition_weights=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="the teacher sampler runs 2"):
        sample_teacher(model, positive=inputs["ctx"], negative=None, reference=inputs["ref"], garment=inputs["gar"],
                       latent_frames=1, steps=2, cfg=1.0, condition_weights=[1.0])
    with pytest.raises(ValueError, match="finite"):
        condition_weight_schedule(4, float("nan"))


# -- local attention ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("local", [1, 2, 3])
@torch.no_grad()
def test_local_attention_equals_full_forward_under_local_mask(model, inputs, local):
    settings = StreamSettings(chunk_frames=2, cache_frames=14)  # 2 cond + sink 2 + window 10: nothing evicted
    cache = KVCache.empty(model.config, CacheGeometry(settings, TPF))
    text = model.prepare_text(inputs["ctx"])
    prefill_conditions(model, cache, text, inputs["ref"], inputs["gar"])
    g = torch.Generator().manual_seed(3)
    video, t = inputs["video"][:, :, :10], torch.rand(1, 10, generator=g) * 1000
    outs = [chunk_forward(model, cache, text, video[:, :, 2 * k : 2 * k + 2], t[:, 2 * k : 2 * k + 2],
                          cache.reserve(2, 2 + 2 * k), local_frames=local) for k in range(5)]
    seq = torch.cat([inputs["ref"], inputs["gar"], video], dim=2)
    frame_t = torch.cat([torch.zeros(1, 2), t], dim=1)
    mask = local_frame_mask(2, 10, 2, TPF, sink_frames=2, local_frames=local)
    full = model.forward_frames(seq, frame_t, 0, text, FullAttention(mask))[:, :, 2:]
    torch.testing.assert_close(torch.cat(outs, 2), full, atol=ATOL, rtol=0)
    wide = model.forward_frames(seq, frame_t, 0, text, FullAttention(frame_block_mask(2, 10, 2, TPF)))[:, :, 2:]
    assert not torch.allclose(full[:, :, 8:], wide[:, :, 8:], atol=1e-3)  # chunk 4 lost history: teeth


def test_local_frame_mask_by_hand():
    m = local_frame_mask(2, 8, 2, 1, sink_frames=2, local_frames=2)
    # query frame 7 (chunk 3, frames 6-7): conds, sink 0-1, local 4-5, itself 6-7
    assert m[2 + 7].nonzero().flatten().tolist() == [0, 1, 2, 3, 6, 7, 8, 9]
    assert m[0].nonzero().flatten().tolist() == [0, 1]
    with pytest.raises(ValueError, match="local_frames must be >= 1"):
        local_frame_mask(2, 8, 2, 1, sink_frames=2, local_frames=0)


def test_local_frames_bad_value(model, inputs):
    with pytest.raises(ValueError, match="local_frames must be an integer >= 1"):
        with_options(_start(model, inputs), local_frames=0)


# -- source video ---------------------------------------------------------------------------------------------


def test_strength_snaps_to_nearest_student_step():
    assert [start_step_for_strength(TS, s) for s in (1.0, 0.95, 0.9, 0.85, 0.7, 0.1)] == [0, 1, 1, 2, 3, 3]
    assert start_step_for_strength(TS, 0.0) is None
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match=r"strength must be a number in \[0, 1\]"):
            start_step_for_strength(TS, bad)


@torch.no_grad()
def test_source_chunk_equals_hand_sdedit(model, inputs):
    settings = StreamSettings(chunk_frames=2, cache_frames=12)
    text = model.prepare_text(inputs["ctx"])
    src = inputs["video"][:, :, :2]
    eps = torch.randn(src.shape, generator=torch.Generator().manual_seed(9))

    def fresh():
        cache = KVCache.empty(model.config, CacheGeometry(settings, TPF))
        prefill_conditions(model, cache, text, inputs["ref"], inputs["gar"])
        return cache, cache.reserve(2, 2)

    calls = []
    cache, slots = fresh()
    got = denoise_chunk(model, cache, text, slots, TS, lambda i: calls.append(i) or eps,
                        source=ChunkSource(src, 3), clean_pass=False)
    assert calls == [3]  # one step run: the last
    cache2, slots2 = fresh()
    x = (1 - 0.625) * src + 0.625 * eps
    t = torch.tensor([float(model_timestep(625.0, model.dtype))])
    want = x - 0.625 * chunk_forward(model, cache2, text, x, t, slots2)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    # Strength 0 copies the source; a zero mask keeps it exactly; a one mask equals no mask.
    cache, slots = fresh()
    assert torch.equal(denoise_chunk(model, cache, text, slots, TS, lambda i: eps, source=ChunkSource(src, None)), src)
    cache, slots = fresh()
    zero = torch.zeros(1, 1, 1, H, W)
    assert torch.equal(denoise_chunk(model, cache, text, slots, TS, lambda i: eps, source=ChunkSource(src, 1, zero)),
                       src)
    cache, slots = fresh()
    a = denoise_chunk(model, cache, text, slots, TS, lambda i: eps, source=ChunkSource(src, 1, zero + 1))
    cache, slots = fresh()
    b = denoise_chunk(model, cache, text, slots, TS, lambda i: eps, source=ChunkSource(src, 1))
    assert torch.equal(a, b)


@torch.no_grad()
def test_stream_with_source_keeps_outside_of_mask_and_moves_toward_source(model, inputs):
    state = _start(model, inputs)
    video = inputs["video"][:, :, :6]
    half = torch.zeros(1, 1, 1, H, W)
    half[..., : H // 2, :] = 1
    _, out = generate(with_options(state, source=SourceVideo(video, 0.9, half)), 6)
    assert torch.equal(out[..., H // 2 :, :], video[..., H // 2 :, :])
    dist = {s: (generate(with_options(state, source=SourceVideo(video, s)), 6)[1] - video).norm().item()
            for s in (0.6, 0.85, 1.0)}
    assert dist[0.6] < dist[0.85] < dist[1.0]
    with pytest.raises(ValueError, match="generate at most 6 more latent frames"):
        generate(with_options(state, source=SourceVideo(video, 0.9)), 8)
    with pytest.raises(ValueError, match="source mask must be"):
        SourceVideo(video, 0.9, torch.zeros(1, 1, 1, H + 1, W))


@torch.no_grad()
def test_garment_switch_mid_video_keeps_the_source_and_changes_the_garment(model, inputs):
    """The session's timeline switches the garment of a try-on stream: the source video carries across the switch
    (outside the mask the output is still the video), and the chunks after it differ from a run without it."""
    half = torch.zeros(1, 1, 1, H, W)
    half[..., : H // 2, :] = 1
    state = with_options(_start(model, inputs), source=SourceVideo(inputs["video"][:, :, :8], 0.9, half),
                         local_frames=2)
    garment = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(4))
    switch = GarmentSwitch(garment, refresh=False, withdraw=True, disentangle=False)
    switched = Session(state, chunks=4, decode=False, timeline=[TimedSwitch(2, switch)])
    out = torch.cat([c.latents for c in switched], dim=2)
    plain = torch.cat([c.latents for c in Session(state, chunks=4, decode=False)], dim=2)
    video = inputs["video"][:, :, :8]
    assert switched.state.source is state.source and switched.state.local_frames == 2
    # the switch started a new clip at latent frame 4, whose first latent frame re-draws the frame before it: from
    # there on latent frame j shows the source's latent frame j - 1 (the same video frames as before the switch)
    assert switched.state.clip_starts == (4,)
    assert torch.equal(out[:, :, :4, H // 2 :, :], video[:, :, :4, H // 2 :, :])
    assert torch.equal(out[:, :, 4:, H // 2 :, :], video[:, :, 3:7, H // 2 :, :])
    assert torch.equal(out[:, :, :4], plain[:, :, :4]) and not torch.allclose(out[:, :, 4:], plain[:, :, 4:])


@torch.no_grad()
def test_keyframe_then_fill_anchors_each_segment_on_its_keyframe(model, inputs):
    state = _start(model, inputs)
    video = inputs["video"]  # 12 frames = 6 chunks of 2 -> 3 segments of 2 chunks
    half = torch.zeros(1, 1, 1, H, W)
    half[..., :, : W // 2] = 1
    seen = []
    out, keys = keyframe_then_fill(state, video, segment_chunks=2, strength=0.9, mask=half,
                                   progress=lambda d, t: seen.append((d, t)))
    assert out.shape == video.shape and keys.shape[2] == 6 and seen[-1] == (9, 9)
    for n, first in enumerate((0, 4, 8)):  # each segment starts with its keyframe chunk, exactly
        assert torch.equal(out[:, :, first : first + 2], keys[:, :, 2 * n : 2 * n + 2])
    assert torch.equal(out[..., W // 2 :], video[..., W // 2 :])  # outside the mask: the source
    # The keyframes are one stream over the segment starts: its first chunk is the plain try-on's first chunk.
    _, plain = generate(with_options(state, source=SourceVideo(video, 0.9, half)), 2)
    assert torch.equal(keys[:, :, :2], plain)


def test_latent_mask_pools_space_and_time():
    m = torch.zeros(9, 8, 8)
    m[5, :4, :4] = 1  # pixel frame 5 -> latent frame 2 (frames 5..8)
    lm = latent_mask(m, 3, 4, 4)
    assert lm.shape == (1, 1, 3, 4, 4)
    assert lm[0, 0, 2, :2, :2].eq(1).all() and lm[0, 0, :2].eq(0).all() and lm[0, 0, 2, 2:].eq(0).all()
