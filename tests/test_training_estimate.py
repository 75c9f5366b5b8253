"""The 5B training estimate (chameleon_core.training.estimate): FLOPs against torch's FLOP counter, the calibration
against the one measured point, the memory terms' arithmetic, and FSDP2's unsharded gradient accumulation (the
term that dominates at the paper's batch) observed on a tiny sharded model."""

from __future__ import annotations

import math

import torch

from chameleon_core.config import preset
from chameleon_core.training import estimate as est

FIVE_B = preset("wan2.2-ti2v-5b")


def test_forward_flops_equal_torchs_flop_counter():
    """The formula against FlopCounterMode over a real forward (math attention, so its matmuls are counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from tests.tiny_models import tiny_transformer

    cfg = preset("tiny")
    model = tiny_transformer(0)
    x, ref, gar = torch.randn(1, 48, 3, 4, 4), torch.randn(1, 48, 1, 4, 4), torch.randn(1, 48, 1, 4, 4)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(x, torch.tensor([500.0]), torch.randn(1, 16, 64), reference=ref, garment=gar)
    counts = fc.get_flop_counts()
    blocks = sum(sum(v.values()) for k, v in counts.items() if k.count(".") == 2 and ".blocks." in k)
    text_kv = sum(sum(v.values()) for k, v in counts.items() if k.endswith(("cross_attn.k", "cross_attn.v")))
    tokens = (2 + 3) * cfg.tokens_per_frame(64, 64)  # reference, garment, 3 video frames
    assert blocks + text_kv == est.dit_forward_flops(cfg, tokens, tokens)


def test_vae_decode_flops_scale_as_counted():
    """The per-frame, per-latent-pixel rates (counted at 1-2 frames of 4x4) predict a count at another size to
    0.01 % (the 5B reward decode: 21 frames of 44x80)."""
    from torch.utils.flop_counter import FlopCounterMode

    from chameleon_core.vae import build_vae

    vae = build_vae("wan2.2", device="meta", seed=None)
    with FlopCounterMode(display=False) as fc:
        vae.decode(torch.zeros(1, 48, 3, 8, 6, device="meta"))
    assert math.isclose(est.vae_decode_flops(3, 8, 6), fc.get_total_flops(), rel_tol=1e-4)


def test_the_calibration_reproduces_the_measurement_and_the_model_explains_it():
    g = est.Geometry()
    check = est.calibration_check(FIVE_B, g)
    assert math.isclose(check["peak_gib"], est.CALIBRATION.peak_gib, rel_tol=1e-9)
    # The analytic terms alone come within 1 GiB of the measured 82.4 GiB: the residual is small.
    assert abs(check["residual_gib"]) < 1.0
    rate, _ = est.calibrate(FIVE_B, g)
    assert math.isclose(est.stage_flops("sft", FIVE_B, g)["train"] / rate, 3.99)
    assert 250 < rate / 1e12 < 450  # a plausible share of an H200's ~990 dense bf16 TFLOP/s


def test_rows_follow_the_terms():
    g = est.Geometry()
    p, root = est.param_counts(FIVE_B)
    assert 4.9e9 < p < 5.1e9 and 1.0e9 < root < 1.4e9
    rows = {(r["stage"], r["gpus"]): r for r in est.estimate_rows(FIVE_B, g, [1, 2, 4, 8])}
    for stage in ("sft", "forcing", "dmd", "dmd (teacher offloaded)"):
        mems = [rows[stage, n]["memory_gib"] for n in (1, 2, 4, 8)]
        assert mems == sorted(mems, reverse=True)
        hours = {round(rows[stage, n]["gpu_hours"][0], 6) for n in (1, 2, 4, 8)}
        assert len(hours) == 1  # compute-bound: GPU-hours do not depend on the GPU count
    sft1, sft8 = rows["sft", 1]["memory_terms_gib"], rows["sft", 8]["memory_terms_gib"]
    assert math.isclose(sft1["sharded"], 16 * p / 2**30) and math.isclose(sft8["sharded"], 2 * p / 2**30)
    assert math.isclose(sft8["accumulation"], 4 * p / 2**30)  # 8 micro-batches per GPU at batch 64
    for n in (1, 2, 4, 8):  # offloading the teacher frees exactly its fp32 shard
        saved = rows["dmd", n]["memory_gib"] - rows["dmd (teacher offloaded)", n]["memory_gib"]
        assert math.isclose(saved, 4 * p / n / 2**30)
    sft, forcing, dmd = (rows[s, 8]["seconds_per_step"] for s in ("sft", "forcing", "dmd"))
    assert math.isclose(sft, 8 * 3.99) and sft < forcing < dmd
    lo, hi = rows["sft", 8]["gpu_hours"]
    assert math.isclose(lo, 2300 * 64 * 3.99 / 3600) and math.isclose(hi, 5000 * 64 * 3.99 / 3600)


def test_cli(capsys):
    assert est.main(["--gpus", "2,8", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ESTIMATE (no GPU was used)") and "| dmd (teacher offloaded) | 8 | 8 |" in out
    assert "| sft | 8 | 8 | 35.8 | yes | yes | 32 | 2.01 | 2300-5000 | 163-355 |" in out
    assert est.main(["--gpus", "3"]) == 2 and "not divisible by 3" in capsys.readouterr().err


def test_fsdp_keeps_unsharded_fp32_gradients_while_accumulating(tmp_path):
    """The estimate's accumulation term: with gradient sync off (every micro-batch but the last), FSDP2 holds the
    unsharded gradients of every parameter in the reduce dtype (fp32): 4 bytes per parameter, whatever the GPU
    count. Observed on the tiny model, sharded, computing in bf16 as the 5B stages do."""
    from chameleon_core.training.config import load_config
    from chameleon_core.training.runtime import Run

    cfg = load_config("tiny_sft", [f"run.out={tmp_path / 'run'}", "model.param_dtype=bf16"])
    run = Run.start(cfg)
    try:
        model = run.build_model("random:0")
        model.set_requires_gradient_sync(False)
        x, ref, gar = torch.randn(1, 48, 2, 4, 4), torch.randn(1, 48, 1, 4, 4), torch.randn(1, 48, 1, 4, 4)
        model(x, torch.tensor([500.0]), torch.randn(1, 5, 64), reference=ref, garment=gar).float().pow(2).mean().backward()
        states = [m._get_fsdp_state() for m in model.modules() if hasattr(m, "_get_fsdp_state")]
        params = [fp for s in states for fp in s._fsdp_param_group.fsdp_params]
        held = sum(fp.unsharded_accumulated_grad.numel() * fp.unsharded_accumulated_grad.element_size()
                   for fp in params if fp.unsharded_accumulated_grad is not None)
        total = sum(p.numel() for p in model.parameters())
        assert held == 4 * total
    finally:
        run.close()
