"""The GPU-size estimate: weight bytes per format against a parameter count, and the fit verdicts."""

from __future__ import annotations

import torch

from chameleon_core.config import StreamSettings, preset
from chameleon_core.memory import estimate_stream_memory
from chameleon_core.model import WanModel
from chameleon_core.tools import gpu_sizes


def test_weight_bytes_count_block_linears_at_the_format_bits_and_the_rest_in_bf16():
    cfg = preset("wan2.2-ti2v-5b")
    with torch.device("meta"):
        params = dict(WanModel(cfg).named_parameters())
    linear = sum(p.numel() for n, p in params.items() if n.startswith("blocks.") and p.ndim == 2)
    other = sum(p.numel() for p in params.values()) - linear
    assert 4.9e9 < linear + other < 5.1e9  # the 5B model
    assert gpu_sizes.weight_bytes(cfg, 16) == 2 * (linear + other)
    assert gpu_sizes.weight_bytes(cfg, 8) == linear + 2 * other
    assert gpu_sizes.weight_bytes(cfg, 4.5) == int(linear * 4.5 / 8 + 2 * other)


def test_verdicts_follow_weights_plus_stream_and_grow_with_the_gpu():
    cfg = preset("wan2.2-ti2v-5b")
    settings = StreamSettings()
    rows = gpu_sizes.estimate_rows(cfg, settings, usable=0.9, min_resident=0.15)
    assert len(rows) == len(gpu_sizes.RESOLUTIONS) * len(gpu_sizes.FORMATS)
    order = {"no": 0, "partial": 1, "full": 2}
    for r in rows:
        w, h = map(int, r["resolution"].split("x"))
        assert r["stream"] == estimate_stream_memory(cfg, settings, cfg.tokens_per_frame(h, w), device="cuda").total
        verdicts = [order[r["fits"][g]] for g in gpu_sizes.GPU_GIB]
        assert verdicts == sorted(verdicts)
        for g in gpu_sizes.GPU_GIB:
            budget = g * 2**30 * 0.9
            assert (r["fits"][g] == "full") == (r["weights"] + r["stream"] <= budget)
    table = gpu_sizes.markdown(rows)
    assert table.count("\n") == len(rows) + 1 and "| 1280x704 | bf16 |" in table
