"""Streaming with the KV cache equals independent full forwards under the matching attention masks (fp32, tiny).

The full forwards use only the model and an explicit boolean mask (``frame_block_mask``); the streaming side uses
the cache, its slot bookkeeping and its RoPE positions. Every comparison is also run with positions shifted by one
frame, which must break it.
"""

from __future__ import annotations

import pytest
import torch

from chameleon_core.attention import attention, frame_block_mask
from chameleon_core.cache import CacheGeometry, KVCache, Region
from chameleon_core.causal import chunk_forward, prefill_conditions
from chameleon_core.config import StreamSettings, preset
from tests.tiny_models import tiny_transformer

H, W = 4, 6  # latent grid -> 2 x 3 = 6 tokens per frame
ATOL = 1e-4


@pytest.fixture(scope="module")
def model():
    # Norm gains near 1 (as trained models have) make attention position-sensitive, so that the off-by-one
    # checks have teeth.
    return tiny_transformer(0)


def _inputs(model, frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = model.config.in_dim
    ref = torch.randn(1, c, 1, H, W, generator=g)
    gar = torch.randn(1, c, 1, H, W, generator=g)
    video = torch.randn(1, c, frames, H, W, generator=g)
    ctx = torch.randn(1, 7, model.config.text_dim, generator=g)
    t = torch.rand(1, frames, generator=g) * 1000  # one timestep per frame
    return ref, gar, video, ctx, t


def _full(model, ref, gar, video, ctx, frame_t, mask):
    tpf = (H // 2) * (W // 2)
    t_tokens = frame_t.repeat_interleave(tpf, dim=1)
    return model(video, t_tokens, ctx, reference=ref, garment=gar, attn_mask=mask)


def _stream(model, stream, ref, gar, video, ctx, frame_t, shift=0):
    tpf = (H // 2) * (W // 2)
    cache = KVCache.empty(model.config, CacheGeometry(stream, tpf))
    text = model.prepare_text(ctx)
    prefill_conditions(model, cache, text, ref, gar)
    outs, c = [], stream.chunk_frames
    for k in range(video.shape[2] // c):
        slots = cache.reserve(c, 2 + k * c + shift)
        outs.append(chunk_forward(model, cache, text, video[:, :, k * c : (k + 1) * c], frame_t[:, k * c : (k + 1) * c], slots))
    return torch.cat(outs, dim=2), cache


@torch.no_grad()
def test_streaming_equals_block_causal_full_forward(model):
    stream = StreamSettings(chunk_frames=2, cache_frames=2 + 2 + 8)  # large enough: no eviction in 4 chunks
    ref, gar, video, ctx, t = _inputs(model, 8)
    mask = frame_block_mask(2, 8, 2, 6)
    full = _full(model, ref, gar, video, ctx, t, mask)
    streamed, cache = _stream(model, stream, ref, gar, video, ctx, t)
    torch.testing.assert_close(streamed, full, atol=ATOL, rtol=0)
    assert cache.region_positions(Region.SINK) == [2, 3]
    assert cache.region_positions(Region.WINDOW) == [4, 5, 6, 7, 8, 9, None, None]
    # Sanity of the test itself: without the mask the result differs (later chunks leak into earlier ones) ...
    assert not torch.allclose(_full(model, ref, gar, video, ctx, t, None), full, atol=ATOL)
    # ... and so does streaming at positions off by one.
    shifted, _ = _stream(model, stream, ref, gar, video, ctx, t, shift=1)
    assert not torch.allclose(shifted, full, atol=ATOL)


@torch.no_grad()
def test_rolling_eviction_equals_sink_plus_window_mask(model):
    # 2 conditions + 1 sink chunk of 2 + window of 3 chunks (the current one included) = 10 frames.
    stream = StreamSettings(chunk_frames=2, cache_frames=10, sink_chunks=1)
    frames = 14  # 7 chunks: eviction starts at chunk 4
    ref, gar, video, ctx, t = _inputs(model, frames, seed=2)
    mask = frame_block_mask(2, frames, 2, 6, sink_chunks=1, window_chunks=3)
    full = _full(model, ref, gar, video, ctx, t, mask)
    streamed, cache = _stream(model, stream, ref, gar, video, ctx, t)
    torch.testing.assert_close(streamed, full, atol=ATOL, rtol=0)
    # The window now holds chunks 4, 5, 6 (positions 10..15) in ring order; the sink still holds chunk 0.
    assert cache.region_positions(Region.SINK) == [2, 3]
    assert sorted(cache.region_positions(Region.WINDOW)) == list(range(10, 16))
    # The plain block-causal mask (no eviction) is a different computation once eviction has started.
    no_evict = _full(model, ref, gar, video, ctx, t, frame_block_mask(2, frames, 2, 6))
    assert not torch.allclose(no_evict[:, :, 8:], full[:, :, 8:], atol=ATOL)
    shifted, _ = _stream(model, stream, ref, gar, video, ctx, t, shift=1)
    assert not torch.allclose(shifted, full, atol=ATOL)


class _Recorder:
    """Full attention that also records each layer's keys/values (post-RoPE): an independent KV source."""

    def __init__(self, mask=None):
        self.mask, self.k, self.v = mask, {}, {}

    def attend(self, layer, q, k, v, backend=None):
        self.k[layer], self.v[layer] = k, v
        return attention(q, k, v, self.mask)


class _ExplicitKeys:
    """Attention of a chunk over explicit prefix keys (one tensor per layer) followed by its own keys."""

    def __init__(self, k, v):
        self.k, self.v = k, v

    def attend(self, layer, q, k, v, backend=None):
        return attention(q, torch.cat([self.k[layer], k], 1), torch.cat([self.v[layer], v], 1))


@torch.no_grad()
def test_replacing_garment_segment_equals_recomputing_it(model):
    stream = StreamSettings(chunk_frames=2, cache_frames=10, sink_chunks=1)
    ref, gar, video, ctx, t = _inputs(model, 6, seed=3)
    new_gar = torch.randn_like(gar)
    tpf, layers = 6, model.config.num_layers
    text = model.prepare_text(ctx)
    streamed, cache = _stream(model, stream, ref, gar, video, ctx, t)
    before = cache.clone()

    prefill_conditions(model, cache, text, ref, new_gar, store=(False, True))

    # Independent recomputation: the [reference, new garment] pair through a plain forward, keys recorded.
    rec = _Recorder()
    pair = torch.cat([ref, new_gar], dim=2)
    model.forward_frames(pair, torch.zeros(1, 2), 0, text, rec)
    gslot = cache.geometry.token_range(1)
    for layer in range(layers):
        torch.testing.assert_close(cache.k[layer][:, gslot], rec.k[layer][:, tpf:], atol=1e-6, rtol=0)
        torch.testing.assert_close(cache.v[layer][:, gslot], rec.v[layer][:, tpf:], atol=1e-6, rtol=0)
    # Every other slot is untouched, bit for bit.
    other = torch.ones(cache.k.shape[2], dtype=torch.bool)
    other[gslot] = False
    assert torch.equal(cache.k[:, :, other], before.k[:, :, other])
    assert torch.equal(cache.v[:, :, other], before.v[:, :, other])
    assert cache.positions == before.positions

    # The next chunk reads exactly: old reference, new garment, then the old chunks' keys.
    full_rec = _Recorder(frame_block_mask(2, 6, 2, tpf))
    model.forward_frames(torch.cat([ref, gar, video], 2), torch.cat([torch.zeros(1, 2), t], 1), 0, text, full_rec)
    nxt = torch.randn(1, model.config.in_dim, 2, H, W)
    tn = torch.full((1,), 500.0)
    slots = cache.reserve(2, 8)
    got = chunk_forward(model, cache, text, nxt, tn, slots)
    pk = {i: torch.cat([full_rec.k[i][:, :tpf], rec.k[i][:, tpf:], full_rec.k[i][:, 2 * tpf :]], 1) for i in range(layers)}
    pv = {i: torch.cat([full_rec.v[i][:, :tpf], rec.v[i][:, tpf:], full_rec.v[i][:, 2 * tpf :]], 1) for i in range(layers)}
    want = model.forward_frames(nxt, tn[:, None].expand(1, 2), 8, text, _ExplicitKeys(pk, pv))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    off_by_one = model.forward_frames(nxt, tn[:, None].expand(1, 2), 9, text, _ExplicitKeys(pk, pv))
    assert not torch.allclose(got, off_by_one, atol=ATOL)


def test_full_forward_mask_matches_plain_forward_without_conditions_leakage(model):
    """The condition rows of the mask: conditions see only conditions, so video never changes their keys."""
    mask = frame_block_mask(2, 4, 2, 3)
    assert mask.shape == (18, 18)
    assert mask[:6, :6].all() and not mask[:6, 6:].any()  # conditions attend to each other only
    assert mask[6:12, :12].all() and not mask[6:12, 12:].any()  # chunk 0: conditions + itself
    assert mask[12:, :].all()  # chunk 1: everything before and itself


def test_cache_size_is_derived_from_config_and_resolution():
    cfg = preset("wan2.2-ti2v-5b")
    geo = CacheGeometry.for_resolution(cfg, StreamSettings(), 1280, 704)
    assert geo.tokens_per_frame == (1280 // 32) * (704 // 32)
    assert geo.capacity_tokens == 23 * geo.tokens_per_frame
    with pytest.raises(ValueError, match="multiple of 32"):
        CacheGeometry.for_resolution(cfg, StreamSettings(), 1280, 700)
