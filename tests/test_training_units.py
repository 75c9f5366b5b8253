"""Unit tests of the training package (in-process, CPU, tiny): the teacher-forcing mask and its equivalence with
streaming, flow-matching weights, captions and bad data, config overrides, the bucketed sampler."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from chameleon_core.training.forcing_mask import (
    forcing_forward,
    forcing_frame_mask,
    forcing_token_mask,
)

# --- the teacher-forcing mask ---------------------------------------------------------------------------------------


def _rule(q: tuple[str, str, int], k: tuple[str, str, int]) -> bool:
    """The facts file's rule, stated per (half, kind, chunk) of query and key; written apart from the code."""
    q_half, q_kind, q_chunk = q
    k_half, k_kind, k_chunk = k
    if q_half == "clean" and q_kind == "cond":
        return k_half == "clean" and k_kind == "cond"
    if q_half == "clean":
        return k_half == "clean" and (k_kind == "cond" or k_chunk <= q_chunk)
    if q_kind == "cond":
        return k_half == "noisy" and k_kind == "cond"
    if k_half == "noisy":
        return k_kind == "video" and k_chunk == q_chunk
    return k_kind == "cond" or k_chunk < q_chunk


@pytest.mark.parametrize("frames,chunk", [(6, 3), (4, 1), (4, 2), (3, 3)])
def test_forcing_mask_block_by_block(frames, chunk):
    tpf = 2
    labels = []
    for half in ("clean", "noisy"):
        labels += [(half, "cond", -1)] * 2
        labels += [(half, "video", f // chunk) for f in range(frames)]
    mask = forcing_token_mask(frames, chunk, tpf)
    assert mask.shape == (len(labels) * tpf,) * 2
    for i, q in enumerate(labels):
        for j, k in enumerate(labels):
            block = mask[i * tpf : (i + 1) * tpf, j * tpf : (j + 1) * tpf]
            expected = _rule(q, k)
            assert bool(block.all()) == expected and bool(block.any()) == expected, (q, k)


def test_forcing_mask_rejects_partial_chunks():
    with pytest.raises(ValueError, match="chunks of 3"):
        forcing_frame_mask(4, 3)


def test_flex_mask_mod_matches_boolean_mask():
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    from chameleon_core.training.forcing_mask import FlexForcingAttention

    try:
        plan = FlexForcingAttention(4, 2, 3, torch.device("cpu"))
    except Exception as e:  # noqa: BLE001 - FlexAttention's CPU support varies by build
        pytest.skip(f"FlexAttention block masks unavailable on this CPU build: {e}")
    length = 2 * (2 + 4) * 3
    dense = flex.create_mask(plan.mask_mod, None, None, length, length, device="cpu")[0, 0]
    assert torch.equal(dense, forcing_token_mask(4, 2, 3))


def test_self_made_references_are_the_students_redrawn_first_frame():
    """``forcing.self_reference``: a picked sample's reference is the student's first latent frame of a one-chunk
    rollout from its reference and the next sample's garment, decoded and re-encoded as disentangle re-encodes a
    frame (recomputed here from the public pieces); unpicked samples keep theirs; the draws repeat for the same seed,
    step and slots, and the forcing loss trains through them with gradient only in its own forward."""
    import copy

    from chameleon_core.latents import latent_family, to_raw
    from chameleon_core.rescheduling import reference_from_frame
    from chameleon_core.training.config import load_config
    from chameleon_core.training.dmd import SampleRandom, rollout, rollout_settings
    from chameleon_core.training.latent_cache import Batch, sample_generator
    from chameleon_core.training.parallel import prepare_model
    from chameleon_core.training.prepare import make_vae
    from chameleon_core.training.self_reference import STUDENT_STEPS
    from chameleon_core.training.stage_forcing import forcing_loss, self_made_references
    from tests.tiny_models import tiny_transformer

    plain = tiny_transformer(3)
    model = prepare_model(copy.deepcopy(plain), device=torch.device("cpu"), fsdp=False, activation_checkpointing=False)
    g = torch.Generator().manual_seed(0)
    c = model.config.in_dim
    batch = Batch(torch.randn(3, c, 4, 4, 4, generator=g), torch.randn(3, c, 1, 4, 4, generator=g),
                  torch.randn(3, c, 1, 4, 4, generator=g), torch.randn(3, 5, model.config.text_dim, generator=g),
                  [0, 1, 2], ["a", "b", "c"], ["dynamic"] * 3)
    sets = ["forcing.chunk_frames=2", "forcing.self_reference_vae=random:wan2.2-tiny"]
    every = load_config("tiny_forcing", [*sets, "forcing.self_reference=1"])
    made = self_made_references(model, batch, 5, every)
    vae = make_vae("random:wan2.2-tiny", torch.device("cpu"))
    rng = SampleRandom.from_generators([sample_generator(0, 5, slot, stream=7) for slot in batch.slots])
    with torch.no_grad():
        chunk = rollout(plain, context=batch.context, reference=batch.reference, garment=batch.garment.roll(-1, 0),
                        settings=rollout_settings(2, 1, steps=STUDENT_STEPS, shift=5.0), num_chunks=1,
                        exit_step=STUDENT_STEPS - 1, rng=rng, grad=False)
        frame = vae.decode(to_raw(chunk[:, :, :1]))[:, :, 0]
        expected = reference_from_frame(vae, latent_family(c), frame)
    torch.testing.assert_close(made, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(made, batch.reference) and not made.requires_grad
    # some picked, some not, the same draws again
    half = load_config("tiny_forcing", [*sets, "forcing.self_reference=0.5"])
    picks = [bool(float(torch.rand(1, generator=sample_generator(0, 5, slot, stream=6))) < 0.5) for slot in range(3)]
    mixed = self_made_references(model, batch, 5, half)
    for i, picked in enumerate(picks):
        assert torch.equal(mixed[i], batch.reference[i]) != picked
    torch.testing.assert_close(self_made_references(model, batch, 5, half), mixed)
    # the loss trains through its own forward only (the rollout ran without gradient)
    loss, _ = forcing_loss(model, batch, 5, every, torch.float32)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # a probability without a VAE names the setting
    with pytest.raises(ValueError, match="forcing.self_reference_vae"):
        self_made_references(model, batch, 5, load_config("tiny_forcing", ["forcing.self_reference=1"]))
    with pytest.raises(ValueError, match="probability"):
        load_config("tiny_forcing", ["forcing.self_reference=1.5"])


@pytest.mark.parametrize("offset", [0, 4])
def test_teacher_forced_forward_equals_streaming_on_clean_history(offset):
    """Noisy chunk b of the teacher-forced forward == the streaming student denoising chunk b over a cache filled
    with the conditions and the clean passes of chunks < b; with a position offset, == a stream whose chunks after
    the first (the sink) sit ``offset`` frames later (the RoPE positions of a stream longer than the clip)."""
    from chameleon_core.cache import CacheGeometry, KVCache
    from chameleon_core.causal import chunk_forward, prefill_conditions
    from chameleon_core.config import StreamSettings
    from tests.tiny_models import tiny_transformer

    model = tiny_transformer(3)
    cfg = model.config
    frames, chunk = 4, 2
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(1, cfg.in_dim, frames, 4, 4, generator=g)
    noisy = torch.randn(1, cfg.in_dim, frames, 4, 4, generator=g)
    ref = torch.randn(1, cfg.in_dim, 1, 4, 4, generator=g)
    gar = torch.randn(1, cfg.in_dim, 1, 4, 4, generator=g)
    ctx = torch.randn(1, 5, cfg.text_dim, generator=g)
    video_t = torch.tensor([[937.0, 937.0, 625.0, 625.0]])
    with torch.no_grad():
        forced = forcing_forward(model, clean, noisy, ref, gar, video_t, ctx, chunk, backend="sdpa",
                                 position_offset=offset)
        settings = StreamSettings(chunk_frames=chunk, cache_frames=2 + frames, sink_chunks=1)
        cache = KVCache.empty(cfg, CacheGeometry.for_resolution(cfg, settings, 64, 64))
        text = model.prepare_text(ctx)
        prefill_conditions(model, cache, text, ref, gar)
        for b in range(frames // chunk):
            sl = slice(b * chunk, (b + 1) * chunk)
            slots = cache.reserve(chunk, 2 + b * chunk + (offset if b else 0))
            streamed = chunk_forward(model, cache, text, noisy[:, :, sl], video_t[:, sl], slots)
            torch.testing.assert_close(forced[:, :, sl], streamed, atol=2e-5, rtol=1e-4)
            chunk_forward(model, cache, text, clean[:, :, sl], torch.zeros(1), slots)  # the clean pass


# --- flow matching ------------------------------------------------------------------------------------------------


def test_loss_weights_and_timesteps():
    from chameleon_core.training.flow import (
        loss_weight_table,
        noise_level,
        timestep_table,
    )

    w, t = loss_weight_table(5.0), timestep_table(5.0)
    assert w.shape == (1000,) and math.isclose(float(w.sum()), 1000.0, rel_tol=1e-9)
    assert float(w[0]) == 0.0 and float(t[0]) == 1000.0  # w(1000) = 0
    assert abs(float(t[int(w.argmax())]) - 500.0) < 5.0  # the bump peaks at t = 500
    i = 500  # sigma = 0.5 -> t = 1000 * 2.5 / 3
    tt, sigma, _ = noise_level(i, 5.0)
    assert math.isclose(tt, 1000 * 2.5 / 3, rel_tol=1e-9) and math.isclose(sigma, tt / 1000)


# --- data -----------------------------------------------------------------------------------------------------------


def test_caption_fill_and_variants():
    from chameleon_core.training.data import caption_texts, parse_caption

    cap = parse_caption(json.dumps({"en_short": ["walks", "red dress"], "cn_long": ["走", "红裙"]}))
    assert cap["en_long"] == ["walks", "red dress"] and cap["cn_short"] == ["走", "红裙"]
    assert caption_texts(cap) == {"dynamic": "walks", "full": "walks red dress", "empty": ""}


def test_caption_mixing_rates():
    from chameleon_core.training.latent_cache import choose_text, sample_generator

    picks = [choose_text(sample_generator(0, s, 0, 1), 0.3, 0.1) for s in range(4000)]
    assert abs(picks.count("empty") / 4000 - 0.1) < 0.02
    assert abs(picks.count("full") / 4000 - 0.27) < 0.03  # 30% of the 90% that keep their text


def test_bad_rows_are_named_and_skippable(tmp_path, caplog):
    from chameleon_core.training.data import DataError, load_sample, read_train_csv
    from chameleon_core.training.prepare import prepare
    from chameleon_core.training.synthetic import write_dataset

    csv_path = write_dataset(tmp_path, clips=5, frames=5, width=32, height=32)
    lines = csv_path.read_text().splitlines()
    lines[2] = lines[2].replace('"{', '"{broken', 1)  # row 2: broken caption JSON
    csv_path.write_text("\n".join(lines) + "\n")
    (tmp_path / "clip2_src.png").unlink()  # row 3: missing reference
    (tmp_path / "clip3_cloth.png").write_bytes(b"not a png")  # row 4: unreadable garment
    rows = read_train_csv(csv_path)
    cases = {2: "caption JSON", 3: "reference image not found", 4: "cannot read garment"}
    for row_no, what in cases.items():
        with pytest.raises(DataError, match=what) as e:
            load_sample(rows[row_no - 1], 5, 32, 32)
        assert f"row {row_no}" in str(e.value)
    with pytest.raises(DataError, match=r"row 1.*has 5 frames but 9"):
        load_sample(rows[0], 9, 32, 32)
    out = tmp_path / "cache"
    kwargs = {"vae": "random:wan2.2-tiny", "text_encoder": "random:64", "frames": 5, "width": 32, "height": 32,
              "dtype": "fp32", "device": "cpu"}
    # prepare checks every row before encoding anything and lists all bad rows in one report.
    with pytest.raises(DataError, match=r"3 of 5 rows") as e:
        prepare(csv_path, out, **kwargs)
    for row_no, what in cases.items():
        assert f"row {row_no} (clip{row_no - 1}.mp4): " in str(e.value) and what in str(e.value)
    assert "--skip-bad" in str(e.value) and not list((out / "items").glob("*.safetensors"))
    with caplog.at_level("WARNING"):
        assert prepare(csv_path, out, skip_bad=True, **kwargs) == 2
    (report,) = [r.message for r in caplog.records if "cannot be used" in r.message]
    assert "rows are skipped" in report and all(f"row {n} " in report for n in cases)


def test_batched_rows_equal_rows_encoded_one_by_one(tmp_path):
    """``encode_rows`` (the world's prepare: one VAE call for many clips) gives every row the item ``encode_row``
    gives it alone, with rows of two bucket sizes (portrait and landscape) mixed in one call."""
    from chameleon_core.training.data import read_train_csv
    from chameleon_core.training.prepare import (
        encode_row,
        encode_rows,
        make_text_encoder,
        make_vae,
    )
    from chameleon_core.training.synthetic import write_dataset

    rows = []
    for name, (w, h) in {"portrait": (32, 48), "landscape": (48, 32)}.items():
        rows += read_train_csv(write_dataset(tmp_path / name, clips=3, frames=5, width=w, height=h))
    rows = [rows[0], rows[3], rows[1], rows[4], rows[2]]  # interleaved: the batch holds both sizes
    vae = make_vae("random:wan2.2-tiny", torch.device("cpu"))
    text = make_text_encoder("random:64", torch.device("cpu"))
    batched = encode_rows(rows, vae, text, 5, 32, 48, torch.float32)
    assert len(batched) == len(rows)
    for row, (tensors, meta) in zip(rows, batched):
        alone, alone_meta = encode_row(row, vae, text, 5, 32, 48, torch.float32)
        assert meta == alone_meta and meta["key"] == row.key
        assert set(tensors) == set(alone)
        for k, t in alone.items():
            assert tensors[k].shape == t.shape
            torch.testing.assert_close(tensors[k], t, rtol=1e-4, atol=1e-5)
    sizes = {(m["width"], m["height"]) for _, m in batched}
    assert sizes == {("32", "48"), ("48", "32")}


def test_hgc_bench_reader(tmp_path):
    import csv

    from chameleon_core.training.data import read_hgc_bench

    prompt = json.dumps({"caption": {"en_short": ["turns around", "in a blue coat"]}})
    with (tmp_path / "meta_data.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "src_image", "cloth_image"])
        w.writerow([prompt, "src/a.png", "cloth/a.png"])
    (s,) = read_hgc_bench(tmp_path / "meta_data.csv")
    assert s.prompt == "turns around in a blue coat" and s.reference == tmp_path / "src/a.png"


# --- config and sampler -------------------------------------------------------------------------------------------


def test_presets_and_overrides():
    from chameleon_core.training.config import load_config

    sft = load_config("sft_5b")
    assert (sft.optim.lr, sft.optim.betas, sft.optim.clip, sft.data.batch_size) == (1e-5, (0.9, 0.999), 1.0, 64)
    forcing = load_config("forcing_5b", ["optim.lr=2e-6", "run.out=runs/x"])
    assert forcing.optim.lr == 2e-6 and forcing.optim.betas == (0.0, 0.999) and forcing.run.out == "runs/x"
    dmd = load_config("dmd_5b")
    assert (dmd.optim.lr, dmd.dmd.critic_lr, dmd.dmd.critic_per_generator, dmd.dmd.tau) == (2e-6, 4e-7, 5, 0.2)
    with pytest.raises(ValueError, match="unknown config key"):
        load_config("tiny_sft", ["optim.learning_rate=1"])


def test_bucket_sampler_is_deterministic_and_resumable():
    from chameleon_core.training.latent_cache import BucketSampler

    buckets = [(32, 64)] * 5 + [(64, 32)] * 4
    a = BucketSampler(buckets, 2, seed=1)
    seq = [a.next() for _ in range(10)]
    for batch in seq:
        assert len({buckets[i] for i in batch}) == 1 and len(batch) == 2
    b = BucketSampler(buckets, 2, seed=1)
    for _ in range(6):
        b.next()
    c = BucketSampler(buckets, 2, seed=1)
    c.load_state_dict(b.state_dict())
    assert [c.next() for _ in range(4)] == seq[6:]
    with pytest.raises(ValueError, match="no aspect bucket"):
        BucketSampler(buckets, 8, seed=0)


def test_lr_schedules_against_their_formulas():
    """Warm-up then constant (the default), cosine and linear decays, computed independently; a resumed scheduler
    continues where it stopped; bad settings are refused with the fix."""
    from chameleon_core.training.optim import build_scheduler

    def lrs(decay, total=20, warmup=4, min_ratio=0.1, resume_at=None):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=2.0)
        sched = build_scheduler(opt, warmup, decay=decay, total_steps=total, min_ratio=min_ratio)
        out = []
        for step in range(total):
            if step == resume_at:  # a fresh optimiser and scheduler given the saved states, as Run.resume does
                state, opt_state = sched.state_dict(), opt.state_dict()
                opt = torch.optim.SGD([p], lr=2.0)
                sched = build_scheduler(opt, warmup, decay=decay, total_steps=total, min_ratio=min_ratio)
                opt.load_state_dict(opt_state)
                sched.load_state_dict(state)
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    warm = [2.0 * (s + 1) / 4 for s in range(4)]
    assert lrs("constant") == pytest.approx(warm + [2.0] * 16)
    done = [(s - 4) / 16 for s in range(4, 20)]
    assert lrs("linear") == pytest.approx(warm + [2.0 * (0.1 + 0.9 * (1 - d)) for d in done])
    cosine = warm + [2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * d))) for d in done]
    assert lrs("cosine") == pytest.approx(cosine)
    assert lrs("cosine", resume_at=9) == pytest.approx(cosine)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="one of constant, cosine, linear, got 'step'"):
        build_scheduler(opt, 0, decay="step", total_steps=10)
    with pytest.raises(ValueError, match="raise run.steps or lower optim.warmup_steps"):
        build_scheduler(opt, 10, decay="cosine", total_steps=10)


# --- mixed precision without FSDP ---------------------------------------------------------------------------------


def test_fp32_layers_and_fp32_attention_stay_fp32_under_autocast():
    """Under a trainer's bf16 autocast, the timestep-embedding linears (:meth:`Precision.linear32`) and the CPU
    attention backend compute in fp32: equal to plain fp32 arithmetic, where autocast alone would round to bf16."""
    import torch.nn.functional as F

    from chameleon_core.attention import SDPA, SDPA_FP32
    from chameleon_core.precision import Precision

    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(5, 64, generator=g)
    q, k, v = (torch.randn(2, 7, 2, 16, generator=g) for _ in range(3))
    mask = torch.rand(7, 7, generator=g) > 0.3
    mask[:, 0] = True
    with torch.no_grad():
        fp32_linear, fp32_attn = F.linear(x, layer.weight, layer.bias), SDPA(q, k, v, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            kept = Precision(torch.float32).linear32(layer, x)
            rounded = layer(x)  # what autocast does to any other linear
            attn = SDPA_FP32(q, k, v, mask)
            attn_bf16 = SDPA_FP32(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert kept.dtype == torch.float32 and torch.equal(kept, fp32_linear)
    assert rounded.dtype == torch.bfloat16 and not torch.equal(rounded.float(), fp32_linear)
    assert attn.dtype == torch.float32 and torch.equal(attn, fp32_attn)
    ref = SDPA(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), mask)
    assert attn_bf16.dtype == torch.bfloat16 and torch.equal(attn_bf16, ref.bfloat16())


def _forward_inputs(cfg, seed: int) -> tuple[torch.Tensor, ...]:
    """Seeded inputs of a tiny model's plain forward: video (3 latent frames of 4 x 4), timesteps, prompt, reference,
    garment."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.in_dim, 3, 4, 4, generator=g)
    ref = torch.randn(2, cfg.in_dim, 1, 4, 4, generator=g)
    gar = torch.randn(2, cfg.in_dim, 1, 4, 4, generator=g)
    ctx = torch.randn(2, 5, cfg.text_dim, generator=g)
    return x, torch.tensor([700.0, 250.0]), ctx, ref, gar


def test_autocast_model_computes_in_bf16_with_fp32_master_weights_and_grads():
    """``model.autocast=bf16`` without FSDP: the forward is the fp32 forward to bf16 rounding (not equal: the
    linears do run in bf16), the weights and their gradients stay fp32, CPU attention is the fp32 backend; the
    setting is refused with FSDP (which computes in ``param_dtype``) and for unknown dtypes, naming the fix."""
    import copy

    from chameleon_core.attention import SDPA_FP32
    from chameleon_core.training.config import ConfigError, load_config
    from chameleon_core.training.parallel import prepare_model
    from tests.tiny_models import tiny_transformer

    base = tiny_transformer(4)
    cfg = base.config
    plain = prepare_model(copy.deepcopy(base), device=torch.device("cpu"), fsdp=False, activation_checkpointing=False)
    mixed = prepare_model(copy.deepcopy(base), device=torch.device("cpu"), fsdp=False, activation_checkpointing=False,
                          autocast=torch.bfloat16)
    assert mixed.attention is SDPA_FP32 and plain.autocast_dtype is None
    x, t, ctx, ref, gar = _forward_inputs(cfg, seed=1)
    a = plain(x, t, ctx, reference=ref, garment=gar)
    b = mixed(x, t, ctx, reference=ref, garment=gar)
    rel = float((a - b).detach().norm() / a.detach().norm())
    assert 1e-5 < rel < 3e-2, rel
    b.float().pow(2).mean().backward()
    grads = [p.grad for p in mixed.parameters()]
    assert all(p.dtype == torch.float32 for p in mixed.parameters())
    assert all(gr is not None and gr.dtype == torch.float32 and bool(torch.isfinite(gr).all()) for gr in grads)
    with pytest.raises(ValueError, match="autocast is for a model without FSDP"):
        prepare_model(copy.deepcopy(base), device=torch.device("cpu"), fsdp=True, autocast=torch.bfloat16)
    with pytest.raises(ConfigError, match="model.fsdp=false"):
        load_config("tiny_sft", ["model.autocast=bf16"])
    with pytest.raises(ConfigError, match=r"model.autocast = 'fp16'.*one of \['off', 'bf16', 'auto'\]"):
        load_config("tiny_sft", ["model.autocast=fp16", "model.fsdp=false"])
    assert load_config("tiny_sft", ["model.autocast=bf16", "model.fsdp=false"]).model.autocast == "bf16"
    assert load_config("tiny_sft", ["model.autocast=auto"]).model.autocast == "auto"  # with FSDP: off, not refused


def _cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    return None if line is None else set(line.split(":", 1)[1].split())


def test_auto_autocast_is_bf16_only_where_the_cpu_multiplies_bf16_in_hardware(monkeypatch, caplog):
    """``native_bf16("cpu")`` agrees with the kernel's CPU flags (an independent reading: AVX-512 BF16 or AMX), and
    ``model.autocast`` resolves from it: ``auto`` -> bf16 on such a CPU, fp32 (None) elsewhere and under FSDP; an
    explicit ``bf16`` on a CPU that would emulate it is kept, with a warning that names the fix; ``off`` is None."""
    import logging

    from chameleon_core import precision
    from chameleon_core.training.runtime import autocast_dtype

    flags = _cpu_flags()
    if flags is not None:  # AMX also needs the kernel's permission, which only torch's own check asks for
        shown = sorted(f for f in flags if f.startswith(("avx", "amx")))
        if "avx512_bf16" in flags:
            assert precision.native_bf16("cpu"), shown
        elif not {"amx_bf16", "amx_tile"} & flags:
            assert not precision.native_bf16("cpu"), shown
    cpu = torch.device("cpu")
    for avx512_bf16, amx, native in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert precision.native_bf16(cpu) is native
        assert autocast_dtype("auto", cpu, fsdp=False) == (torch.bfloat16 if native else None)
        assert autocast_dtype("auto", cpu, fsdp=True) is None and autocast_dtype("off", cpu, fsdp=False) is None
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="chameleon_core.training.runtime"):
            assert autocast_dtype("bf16", cpu, fsdp=False) == torch.bfloat16
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert (len(warned) == 1 and "model.autocast=auto" in warned[0]) if not native else not warned


def _has_cpp_compiler() -> bool:
    from chameleon_core.training.parallel import (
        MissingCompilerError,
        require_cpp_compiler,
    )

    try:
        require_cpp_compiler()
    except MissingCompilerError:
        return False
    return True


@pytest.mark.skipif(not _has_cpp_compiler(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_blocks_train_as_the_eager_model(monkeypatch):
    """``model.compile`` compiles every block in place: forward and gradients equal the eager model's (fp32, also with
    activation checkpointing; under the bf16 autocast to bf16 rounding), the state-dict keys do not change
    (checkpoints and exports stay readable), and the setting is refused with FSDP and, naming the fix, without a C++
    compiler."""
    import copy

    import torch._inductor.config as inductor_config

    from chameleon_core.training.config import ConfigError, load_config
    from chameleon_core.training.parallel import MissingCompilerError, prepare_model
    from tests.tiny_models import tiny_transformer

    base = tiny_transformer(4)
    cfg = base.config
    x, t, ctx, ref, gar = _forward_inputs(cfg, seed=2)
    for autocast, checkpointed, tol in ((None, False, 1e-5), (torch.bfloat16, False, 2e-2), (None, True, 1e-5)):
        runs = []
        for compiled in (False, True):
            model = prepare_model(copy.deepcopy(base), device=torch.device("cpu"), fsdp=False,
                                  activation_checkpointing=checkpointed, autocast=autocast, compile_blocks=compiled)
            out = model(x, t, ctx, reference=ref, garment=gar)
            out.float().pow(2).mean().backward()
            runs.append((model, out.detach().float(), torch.cat([p.grad.flatten() for p in model.parameters()])))
        (eager, a, ga), (comp, b, gb) = runs
        assert all(blk._compiled_call_impl is not None for blk in comp.blocks)
        assert all(blk._compiled_call_impl is None for blk in eager.blocks)
        assert list(comp.state_dict()) == list(eager.state_dict())
        assert float((a - b).norm() / a.norm()) < tol
        assert float((ga - gb).norm() / ga.norm()) < tol * 10
    with pytest.raises(ValueError, match="compile_blocks is for a model without FSDP"):
        prepare_model(copy.deepcopy(base), device=torch.device("cpu"), fsdp=True, compile_blocks=True)
    with pytest.raises(ConfigError, match=r"model.compile = true with model.fsdp = true.*--set model.fsdp=false"):
        load_config("tiny_sft", ["model.compile=true"])
    assert load_config("tiny_sft", ["model.compile=true", "model.fsdp=false"]).model.compile is True
    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "no-such-c++-compiler"))
    with pytest.raises(MissingCompilerError, match=r"no-such-c\+\+-compiler.*--set model.compile=false"):
        prepare_model(copy.deepcopy(base), device=torch.device("cpu"), fsdp=False, compile_blocks=True)
