"""Streaming generation and garment/prompt switching, checked against an independent rollout.

The independent rollout never touches the KV cache: every denoising step is one full forward over
``[reference, garment, earlier clean chunks at t=0, current chunk at t]`` at explicit RoPE positions, under the
boolean mask the cache is supposed to realise. The same CPU generator supplies the noise in the same order.
"""

from __future__ import annotations

import pytest
import torch

from chameleon_core.attention import FullAttention, frame_block_mask
from chameleon_core.cache import Region
from chameleon_core.config import StreamSettings
from chameleon_core.latents import WAN22
from tests.tiny_models import tiny_transformer
from chameleon_core.rescheduling import switch_garment, switch_prompt
from chameleon_core.schedules import student_timesteps
from chameleon_core.streaming import NonFiniteChunkError, generate, start_stream

H, W = 4, 4  # latent grid -> 4 tokens per frame
TPF = (H // 2) * (W // 2)
ATOL = 2e-4


@pytest.fixture(scope="module")
def model():
    # Norm gains near 1 (as trained models have) make attention position-sensitive, so that the off-by-one
    # checks have teeth.
    return tiny_transformer(0)


@pytest.fixture
def inputs(model):
    g = torch.Generator().manual_seed(7)
    c = model.config.in_dim
    return dict(
        ref=torch.randn(1, c, 1, H, W, generator=g),
        gar=torch.randn(1, c, 1, H, W, generator=g),
        gar2=torch.randn(1, c, 1, H, W, generator=g),
        ctx=torch.randn(1, 5, model.config.text_dim, generator=g),
        ctx2=torch.randn(1, 6, model.config.text_dim, generator=g),
    )


@torch.no_grad()
def independent_chunk(model, ctx, ref, gar, prior, start, gen, c, mask_frames=None, ts=None):
    """Few-step rollout of one chunk by full forwards. ``prior``: [(clean latents [1,C,c,h,w], first position)].

    ``mask_frames(n_prior_chunks)`` gives the frame-level mask kwargs; default: block-causal over everything.
    ``ts``: the timesteps (default: the shift-5 student schedule).
    """
    ts = student_timesteps(5.0) if ts is None else ts
    text = model.prepare_text(ctx)
    frames = [ref, gar] + [p for p, _ in prior]
    positions = [0, 1] + [s + i for _, s in prior for i in range(c)] + [start + i for i in range(c)]
    n_video = len(prior) * c + c
    kwargs = mask_frames(len(prior)) if mask_frames else {}
    mask = frame_block_mask(2, n_video, c, TPF, **kwargs)
    x = torch.randn(1, model.config.in_dim, c, H, W, generator=gen)
    for i, t in enumerate(ts):
        seq = torch.cat(frames + [x], dim=2)
        # The authors feed the DiT (ones(int64) * t).to(dtype).long(): 937.5 -> 937 in fp32.
        t_fed = float(int(torch.tensor(t, dtype=torch.float32).to(model.dtype).long()))
        frame_t = torch.tensor([[0.0] * (2 + len(prior) * c) + [t_fed] * c])
        v = model.forward_frames(seq, frame_t, positions, text, FullAttention(mask))[:, :, -c:]
        x0 = x - t / 1000 * v
        if i + 1 < len(ts):
            s = ts[i + 1] / 1000
            x = (1 - s) * x0 + s * torch.randn(1, model.config.in_dim, c, H, W, generator=gen)
    return x0


def test_generate_equals_independent_rollout_with_eviction(model, inputs):
    stream = StreamSettings(chunk_frames=2, cache_frames=2 + 2 + 4, sink_chunks=1)  # window: 2 chunks incl. current
    state = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=3,
                         settings=stream)
    state2, latents = generate(state, 10)  # 5 chunks: eviction from chunk 3 on
    gen = torch.Generator().manual_seed(3)
    prior = []
    window = lambda n: dict(sink_chunks=1, window_chunks=2)  # noqa: E731
    for k in range(5):
        x0 = independent_chunk(model, inputs["ctx"], inputs["ref"], inputs["gar"], prior, 2 + 2 * k, gen, 2, window)
        torch.testing.assert_close(latents[:, :, 2 * k : 2 * k + 2], x0, atol=ATOL, rtol=0)
        prior.append((x0, 2 + 2 * k))
    assert state2.latent_frames == 10 and state2.cache.positions[:4] == [0, 1, 2, 3]
    assert sorted(state2.cache.region_positions(Region.WINDOW)) == [8, 9, 10, 11]
    # Without eviction in the reference, chunk 4 would differ: the check has teeth.
    gen = torch.Generator().manual_seed(3)
    prior_all = []
    for k in range(5):
        x0 = independent_chunk(model, inputs["ctx"], inputs["ref"], inputs["gar"], prior_all, 2 + 2 * k, gen, 2)
        prior_all.append((x0, 2 + 2 * k))
    assert not torch.allclose(prior_all[4][0], latents[:, :, 8:10], atol=ATOL)


def test_generate_never_changes_its_input_and_is_deterministic(model, inputs):
    state = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=1,
                         settings=StreamSettings(chunk_frames=2, cache_frames=8))
    k0, v0, pos0 = state.cache.k.clone(), state.cache.v.clone(), list(state.cache.positions)
    s1, a = generate(state, 6)
    s2, b = generate(state, 6)
    assert torch.equal(a, b) and torch.equal(s1.cache.k, s2.cache.k)
    assert torch.equal(state.cache.k, k0) and torch.equal(state.cache.v, v0) and state.cache.positions == pos0
    assert state.latent_frames == 0 and state.history == ()
    # Chaining generate calls equals one long call (RNG state is carried in the state).
    s3, c1 = generate(state, 2)
    s4, c2 = generate(s3, 4)
    torch.testing.assert_close(torch.cat([c1, c2], 2), a, atol=0, rtol=0)
    # A different seed gives a different video.
    other = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=2,
                         settings=StreamSettings(chunk_frames=2, cache_frames=8))
    assert not torch.allclose(generate(other, 6)[1], a)


def test_interrupt_returns_last_complete_state(model, inputs):
    state = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=4,
                         settings=StreamSettings(chunk_frames=2, cache_frames=8))
    _, full = generate(state, 8)
    done = []
    part_state, part = generate(state, 8, progress=lambda k, n, x: done.append(k),
                                should_stop=lambda: len(done) >= 2)  # a stop after two chunks
    assert part.shape[2] == 4 and part_state.latent_frames == 4
    resumed_state, rest = generate(part_state, 4)
    torch.testing.assert_close(torch.cat([part, rest], 2), full, atol=0, rtol=0)


@torch.no_grad()
def test_a_stop_between_denoising_steps_abandons_the_chunk_and_leaves_the_state_as_before_it(model, inputs):
    """Cancel is polled between the denoising steps of a chunk too: the chunk in progress is dropped, the cache,
    window and noise generator rewind, and resuming gives the frames of a run that was never stopped."""
    state = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=4,
                         settings=StreamSettings(chunk_frames=2, cache_frames=8))
    _, full = generate(state, 8)
    done, polls = [], []

    def stop_inside_chunk_three() -> bool:  # the loop's poll before chunk 3, then the first poll between its steps
        if len(done) == 2:
            polls.append(1)
        return len(polls) >= 2

    part_state, part = generate(state, 8, progress=lambda k, n, x: done.append(k), should_stop=stop_inside_chunk_three)
    assert len(polls) == 2 and done == [0, 1]  # stopped inside chunk 3, after its first step
    assert part.shape[2] == 4 and part_state.latent_frames == 4
    _, rest = generate(part_state, 4)
    torch.testing.assert_close(torch.cat([part, rest], 2), full, atol=0, rtol=0)


def test_nonfinite_chunk_is_caught_and_input_state_stays_valid(model, inputs):
    state = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=5,
                         settings=StreamSettings(chunk_frames=2, cache_frames=8))
    _, good = generate(state, 4)
    hook = model.head.register_forward_hook(lambda m, i, o: o * float("nan"))
    try:
        with pytest.raises(NonFiniteChunkError, match="NaN"):
            generate(state, 4)
    finally:
        hook.remove()
    torch.testing.assert_close(generate(state, 4)[1], good, atol=0, rtol=0)


def test_long_stream_keeps_cache_size_flat(model, inputs):
    stream = StreamSettings(chunk_frames=3, cache_frames=23, steps=1)
    state = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=0,
                         settings=stream)
    size = state.cache.nbytes
    state, lat = generate(state, 150)  # 50 chunks, far past the 21-frame training clip
    assert lat.shape[2] == 150 and state.latent_frames == 150 and torch.isfinite(lat).all()
    assert state.cache.nbytes == size
    assert state.cache.region_positions(Region.SINK) == [2, 3, 4]
    assert sorted(state.cache.region_positions(Region.WINDOW)) == list(range(152 - 18, 152))


def _started(model, inputs, seed=9, **kw):
    stream = StreamSettings(chunk_frames=2, cache_frames=2 + 2 + 6, sink_chunks=1)
    s = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=seed,
                     settings=stream, **kw)
    return generate(s, 6)[0]


def test_switch_with_all_flags_off_is_identity(model, inputs):
    state = _started(model, inputs)
    same = switch_garment(state, inputs["gar2"], refresh=False, withdraw=False, disentangle=False)
    torch.testing.assert_close(generate(same, 2)[1], generate(state, 2)[1], atol=0, rtol=0)
    assert torch.equal(same.cache.k, state.cache.k) and same.cache.positions == state.cache.positions


def test_refresh_replaces_only_the_garment_segment(model, inputs):
    state = _started(model, inputs)
    new = switch_garment(state, inputs["gar2"], refresh=True, withdraw=False, disentangle=False)
    fresh = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar2"])
    g = new.geometry.token_range(1)
    torch.testing.assert_close(new.cache.k[:, :, g], fresh.cache.k[:, :, g], atol=1e-6, rtol=0)
    torch.testing.assert_close(new.cache.v[:, :, g], fresh.cache.v[:, :, g], atol=1e-6, rtol=0)
    keep = torch.ones(new.cache.k.shape[2], dtype=torch.bool)
    keep[g] = False
    assert torch.equal(new.cache.k[:, :, keep], state.cache.k[:, :, keep])
    assert torch.equal(new.cache.v[:, :, keep], state.cache.v[:, :, keep])
    assert new.cache.positions == state.cache.positions and torch.equal(new.garment, inputs["gar2"])
    assert not torch.equal(state.garment, inputs["gar2"])  # the input state still has the old garment


@pytest.mark.parametrize("withdraw_sink", [True, False])
def test_withdraw_leaves_conditions_and_optionally_the_sink(model, inputs, withdraw_sink):
    state = _started(model, inputs)
    new = switch_garment(state, refresh=False, withdraw=True, disentangle=False, withdraw_sink=withdraw_sink)
    held = [p for p in new.cache.positions if p is not None]
    assert held == ([0, 1] if withdraw_sink else [0, 1, 2, 3])
    # The next chunk attends to exactly those: compare with a full forward over them alone.
    nxt_state, nxt = generate(new, 2)
    gen = torch.Generator().set_state(new.rng_state.clone())
    prior = [] if withdraw_sink else [(state.history[0], 2)]
    # an emptied cache restarts the RoPE positions (the first chunk's); a kept sink keeps them going
    want = independent_chunk(model, inputs["ctx"], inputs["ref"], inputs["gar"], prior, 2 if withdraw_sink else 8,
                             gen, 2)
    torch.testing.assert_close(nxt, want, atol=ATOL, rtol=0)
    # A dropped sink re-forms from the first chunk after the switch.
    assert nxt_state.cache.region_positions(Region.SINK) == ([8, 9] if withdraw_sink else [2, 3])


@pytest.fixture(scope="module")
def codec():
    """A tiny random Wan2.2 VAE (real architecture and strides): streaming decode and single-image encode."""
    from chameleon_core.vae import build_vae

    return build_vae("wan2.2-tiny", seed=0)


def test_disentangle_reencodes_the_last_frame_of_the_continuous_decode(model, inputs, codec):
    state = _started(model, inputs)
    new = switch_garment(state, refresh=False, withdraw=False, disentangle=True, codec=codec)
    # Independent: decode the whole stream in one go, take its last pixel frame, encode it as an image.
    fam = model.config.latent
    video = codec.decode(fam.to_raw(state.latents()))
    expected_ref = fam.to_model_space(codec.encode_image(video[:, :, -1]))
    torch.testing.assert_close(new.reference, expected_ref, atol=1e-5, rtol=0)
    # Decoding only the last chunk from a cold VAE state gives another frame (the defect this guards against).
    cold = codec.decode(fam.to_raw(state.history[-1]))[:, :, -1]
    assert (cold - video[:, :, -1]).abs().mean() > 1e-3
    # The session's path: the last frame it already decoded gives the same reference.
    handed = switch_garment(state, refresh=False, withdraw=False, disentangle=True, codec=codec,
                            last_frame=video[:, :, -1])
    torch.testing.assert_close(handed.reference, expected_ref, atol=1e-5, rtol=0)
    fresh = start_stream(model, context=inputs["ctx"], reference=expected_ref, garment=inputs["gar"])
    r = new.geometry.token_range(0)
    torch.testing.assert_close(new.cache.k[:, :, r], fresh.cache.k[:, :, r], atol=1e-5, rtol=0)
    keep = torch.ones(new.cache.k.shape[2], dtype=torch.bool)
    keep[r] = False
    assert torch.equal(new.cache.k[:, :, keep], state.cache.k[:, :, keep])
    assert torch.equal(new.cache.v[:, :, keep], state.cache.v[:, :, keep])


@pytest.mark.parametrize("new_clip", [True, False])
def test_full_switch_keeps_frame_numbering_and_restarts_positions(model, inputs, codec, new_clip):
    """A full switch (window and sink withdrawn) keeps the frame numbering; its next chunk is the first chunk of a
    stream with the new conditions (RoPE position 2), or with ``new_clip=False`` the chunk at the frame
    count's position (8); the chunk after it attends to that one at the same distance either way."""
    state = _started(model, inputs)
    new = switch_garment(state, inputs["gar2"], codec=codec,  # refresh + withdraw (sink too) + disentangle
                         new_clip=new_clip)
    assert new.latent_frames == state.latent_frames == 6 and new.next_position == 8
    after, nxt = generate(new, 2)
    # Independent: [new reference, new garment] then the chunk at position 2 (or 8), nothing else.
    at = 2 if new_clip else 8
    gen = torch.Generator().set_state(new.rng_state.clone())
    want = independent_chunk(model, inputs["ctx"], new.reference, inputs["gar2"], [], at, gen, 2)
    torch.testing.assert_close(nxt, want, atol=ATOL, rtol=0)
    gen = torch.Generator().set_state(new.rng_state.clone())
    other = independent_chunk(model, inputs["ctx"], new.reference, inputs["gar2"], [], 10 - at, gen, 2)
    assert not torch.allclose(nxt, other, atol=ATOL)  # the positions are what differs
    assert after.latent_frames == 8 and after.latents().shape[2] == 8
    # the chunk after: that chunk in the sink at its RoPE positions, this one right after it
    _, nxt2 = generate(after, 2)
    gen = torch.Generator().set_state(after.rng_state.clone())
    want2 = independent_chunk(model, inputs["ctx"], new.reference, inputs["gar2"], [(nxt, at)], at + 2, gen, 2)
    torch.testing.assert_close(nxt2, want2, atol=ATOL, rtol=0)
    # the bookkeeping of the new clip: where it starts, and the video frames the stream shows (its first not shown)
    assert new.clip_starts == ((6,) if new_clip else ()) and new.opens_clip == new_clip
    assert after.clip_starts == new.clip_starts and not after.opens_clip
    assert after.video_frames == (1 + 4 * 7 - (4 if new_clip else 0))


def test_a_new_clip_starts_once_per_boundary_and_only_when_the_cache_is_emptied(model, inputs, codec):
    state = _started(model, inputs)
    twice = switch_garment(switch_garment(state, inputs["gar2"], codec=codec), inputs["gar"], codec=codec)
    assert twice.clip_starts == (6,)  # two switches at one boundary: one new clip
    assert switch_garment(state, inputs["gar2"], codec=codec, withdraw_sink=False).clip_starts == ()
    assert switch_garment(state, inputs["gar2"], codec=codec, withdraw=False).clip_starts == ()
    fresh = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])
    assert switch_garment(fresh, inputs["gar2"], disentangle=False).clip_starts == ()  # the stream's start is one
    later, _ = generate(twice, 2)
    again = switch_garment(later, inputs["gar2"], codec=codec)
    assert again.clip_starts == (6, 8) and again.rope_offset == -8
    # disentangle without a handed frame decodes the stream with its clips: the last frame of the new clip's decode
    from chameleon_core.decoding import StreamingDecoder

    clip = codec.decode(WAN22.to_raw(later.latents()[:, :, 6:].to(codec.device, codec.dtype)))
    expected = switch_garment(later, refresh=False, withdraw=False, codec=codec, last_frame=clip[:, :, -1])
    got = switch_garment(later, refresh=False, withdraw=False, codec=codec)
    torch.testing.assert_close(got.reference, expected.reference, atol=1e-5, rtol=0)
    assert StreamingDecoder(codec, WAN22).warm_up(later.latents(), 2, clip_starts=later.clip_starts).video_frames \
        == later.video_frames


def test_switch_prompt_recaches_under_the_new_prompt(model, inputs):
    state = _started(model, inputs)  # 3 chunks, all still cached (window holds 3 chunks incl. current)
    new = switch_prompt(state, inputs["ctx2"])
    _, nxt = generate(new, 2)
    gen = torch.Generator().set_state(new.rng_state.clone())
    prior = [(state.history[k], 2 + 2 * k) for k in range(3)]
    want = independent_chunk(model, inputs["ctx2"], inputs["ref"], inputs["gar"], prior, 8, gen, 2,
                             lambda n: dict(sink_chunks=1, window_chunks=3))
    torch.testing.assert_close(nxt, want, atol=ATOL, rtol=0)
    # The old prompt's continuation differs (the switch did something).
    assert not torch.allclose(generate(state, 2)[1], nxt, atol=ATOL)


def test_bad_inputs_are_reported(model, inputs, codec):
    with pytest.raises(ValueError, match="channels"):
        start_stream(model, context=inputs["ctx"], reference=inputs["ref"][:, :16], garment=inputs["gar"][:, :16])
    with pytest.raises(ValueError, match="same shape"):
        start_stream(model, context=inputs["ctx"], reference=inputs["ref"],
                     garment=torch.randn(1, model.config.in_dim, 1, H, 2 * W))
    state = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"])
    with pytest.raises(ValueError, match="at least one chunk"):
        generate(state, 0)
    with pytest.raises(ValueError, match="no generated frame|generate at least one chunk"):
        switch_garment(state, inputs["gar2"], codec=codec)
    with pytest.raises(ValueError, match="codec"):
        switch_garment(generate(state, 3)[0], inputs["gar2"])


def test_latent_frames_for_counts_the_causal_first_frame(model, inputs):
    """The 4x causal VAE: latent frames 1, 2, 3 decode to video frames 1, 5, 9 (first frame alone), and every
    latent frame after the first to 4 more, so a first segment of F frames takes 1 + ceil((F - 1) / 4) (12 frames
    need 4 latent frames: 3 show only 9) and a later one ceil(F / 4); one chunk (3 latent frames) is the minimum: 9
    video frames at the start, 12 after it."""
    from chameleon_core.frames import latent_frames_for

    state = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"],
                         settings=StreamSettings(chunk_frames=3, cache_frames=11))
    assert [latent_frames_for(state, f) for f in (9, 10, 12, 13, 14, 81)] == [3, 4, 4, 4, 5, 21]
    with pytest.raises(ValueError, match="use at least 9"):
        latent_frames_for(state, 8)
    later, _ = generate(state, 3)
    assert [latent_frames_for(later, f) for f in (12, 13, 16, 17, 48)] == [3, 4, 4, 5, 12]
    with pytest.raises(ValueError, match="use at least 12"):
        latent_frames_for(later, 11)


# --- issue 13: the stream's shift, and NaN inputs refused up front ----------------------------------------------------


def test_shift_is_the_streams_and_matches_an_independent_schedule(model, inputs):
    """A stream started with shift 2 uses the shift-2 schedule (an independent warp of [1, .75, .5, .25]) and gives
    other frames than shift 5; a non-positive or non-finite shift is refused."""

    def warp(shift):  # sigma' = shift * sigma / (1 + (shift - 1) * sigma), written out here independently
        return [1000 * shift * s / (1 + (shift - 1) * s) for s in (1.0, 0.75, 0.5, 0.25)]

    frames = {}
    for shift in (2.0, 5.0):
        stream = StreamSettings(chunk_frames=2, cache_frames=8, shift=shift)
        state = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=3,
                             settings=stream)
        assert state.timesteps == pytest.approx(warp(shift))
        _, frames[shift] = generate(state, 2)
        want = independent_chunk(model, inputs["ctx"], inputs["ref"], inputs["gar"], [], 2,
                                  torch.Generator().manual_seed(3), 2, ts=warp(shift))
        torch.testing.assert_close(frames[shift], want, atol=ATOL, rtol=0)
    assert not torch.allclose(frames[2.0], frames[5.0], atol=ATOL)
    for bad in (float("nan"), 0.0, -2.0, float("inf")):
        with pytest.raises(ValueError, match="shift must be a finite number > 0"):
            StreamSettings(shift=bad)


@pytest.mark.parametrize("which", ["reference", "garment", "context"])
def test_nan_inputs_are_refused_before_any_work_naming_the_input(model, inputs, which):
    args = dict(context=inputs["ctx"].clone(), reference=inputs["ref"].clone(), garment=inputs["gar"].clone())
    args[which].view(-1)[1] = float("nan")
    with pytest.raises(ValueError, match=rf"{which} hold NaN or inf.*nothing was generated.*encode"):
        start_stream(model, **args)


def test_switch_inputs_with_nan_are_refused_before_any_work(model, inputs, codec, monkeypatch):
    state = _started(model, inputs)
    bad_garment = inputs["gar2"].clone()
    bad_garment[0, 0, 0, 0, 0] = float("inf")
    calls = []
    forward = model.forward_frames
    monkeypatch.setattr(model, "forward_frames", lambda *a, **k: calls.append(1) or forward(*a, **k))
    monkeypatch.setattr(codec, "decode_chunk", lambda *a, **k: calls.append("decode"))
    with pytest.raises(ValueError, match="new garment hold NaN or inf"):
        switch_garment(state, bad_garment, codec=codec)
    bad_prompt = inputs["ctx2"].clone()
    bad_prompt[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="new prompt hold NaN or inf.*encode the prompt again"):
        switch_prompt(state, bad_prompt)
    assert not calls  # refused before any forward pass or decode
    switch_prompt(state, inputs["ctx2"])
    assert calls  # the counter has teeth: a good switch runs forwards
