"""The model's state_dict equals the released checkpoints' layouts, name for name and shape for shape."""

from __future__ import annotations

import pytest
import torch

from chameleon_core.config import PRESETS, match_preset
from chameleon_core.model import WanModel


@pytest.mark.parametrize("name", ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b"])
def test_state_dict_matches_reference_layout(name, reference_layout):
    layout = reference_layout(f"{name}.transformer")
    with torch.device("meta"):
        model = WanModel(PRESETS[name])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(layout["tensors"]) - set(ours))
    extra = sorted(set(ours) - set(layout["tensors"]))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    wrong = {k: (ours[k], v) for k, v in layout["tensors"].items() if ours[k] != v}
    assert not wrong, f"shape mismatches (ours, reference): {list(wrong.items())[:5]}"
    assert sum(p.numel() for p in model.parameters()) == layout["num_params"]
    assert list(model.buffers()) == []


@pytest.mark.parametrize("name", ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b"])
def test_preset_config_agrees_with_reference_config(name, reference_layout):
    ref = reference_layout(f"{name}.transformer")["config"]
    cfg = PRESETS[name]
    for field in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "freq_dim",
                  "text_len", "eps", "qk_norm", "cross_attn_norm"):
        assert getattr(cfg, field) == ref[field], field
    assert list(cfg.patch_size) == ref["patch_size"]
    assert match_preset(cfg.renamed("custom")).name == name
