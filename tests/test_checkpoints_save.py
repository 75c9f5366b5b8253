"""Saving checkpoints: what save_transformer / save_vae write is read back exactly by the loaders (weights, config,
role, prompt length), the files are valid for the reference safetensors library, and bad input is refused with an
error that says what to do."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from chameleon_core.checkpoints import (
    FORMAT_VERSION_KEY,
    KIND_METADATA_KEY,
    TEXT_LEN_METADATA_KEY,
    checkpoint_kind,
    inspect_checkpoint,
    load_transformer,
    load_vae,
    save_transformer,
    save_vae,
)
from chameleon_core.config import PRESETS, WanConfig
from chameleon_core.model import WanModel
from tests.tiny_models import tiny_transformer
from chameleon_core.vae import build_vae

#: Not a preset: 3 layers, Wan2.1 latents, a prompt length of its own.
CUSTOM = WanConfig(dim=256, ffn_dim=320, num_heads=2, num_layers=3, in_dim=16, out_dim=16, text_dim=48, text_len=40)


def _assert_same(model: WanModel, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


@pytest.mark.parametrize("kind", ["student", "teacher"])
@pytest.mark.parametrize("config", [PRESETS["tiny"], CUSTOM], ids=["tiny", "custom"])
def test_transformer_round_trip(tmp_path, kind, config):
    model = tiny_transformer(seed=3, config=config)
    # The name hints "student"; the metadata must win over it.
    path = save_transformer(tmp_path / "out" / "student_export.safetensors", model, kind=kind, metadata={"step": "7"})

    assert path == tmp_path / "out" / "student_export.safetensors" and path.is_file()
    assert list(path.parent.iterdir()) == [path]  # nothing left beside it
    assert checkpoint_kind(path) == kind
    loaded = load_transformer(path, dtype=torch.float32)
    assert loaded.config == config and loaded.config.text_len == config.text_len
    _assert_same(loaded, model.state_dict())
    info = inspect_checkpoint(path)
    assert info.layout == "wan" and info.stored_dtype == torch.float32
    assert info.metadata == {
        KIND_METADATA_KEY: kind,
        TEXT_LEN_METADATA_KEY: str(config.text_len),
        FORMAT_VERSION_KEY: "1",
        "step": "7",
    }


def test_file_is_read_by_the_reference_safetensors_library(tmp_path):
    model = tiny_transformer(seed=4)
    path = save_transformer(tmp_path / "m.safetensors", model, kind="student", dtype=torch.bfloat16)
    with safe_open(str(path), "pt") as f:
        assert sorted(f.keys()) == sorted(model.state_dict())
        assert f.metadata()[KIND_METADATA_KEY] == "student"
        for k, v in model.state_dict().items():
            assert torch.equal(f.get_tensor(k), v.bfloat16()), k


def test_bf16_export_loads_as_the_cast_weights(tmp_path):
    model = tiny_transformer(seed=5)
    path = save_transformer(tmp_path / "m.safetensors", model, kind="student", dtype=torch.bfloat16)
    assert inspect_checkpoint(path).stored_dtype == torch.bfloat16
    assert path.stat().st_size < 0.6 * sum(p.numel() * 4 for p in model.parameters())
    _assert_same(load_transformer(path, dtype=torch.bfloat16), {k: v.bfloat16() for k, v in model.state_dict().items()})


class _DataParallelLike(torch.nn.Module):
    """Names every parameter ``module.<name>``, as DDP does."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def test_wrapper_names_are_stripped(tmp_path):
    model = tiny_transformer(seed=6, config=CUSTOM)
    fsdp = {}
    for k, v in model.state_dict().items():
        parts = k.split(".")
        if parts[0] == "blocks":
            parts.insert(2, "_fsdp_wrapped_module")
        fsdp["_orig_mod." + ".".join(parts)] = v
    a = save_transformer(tmp_path / "fsdp.safetensors", fsdp, kind="student", config=CUSTOM)
    b = save_transformer(tmp_path / "ddp.safetensors", _DataParallelLike(model), kind="teacher")  # config via .module
    for path in (a, b):
        loaded = load_transformer(path, dtype=torch.float32)
        assert loaded.config == CUSTOM
        _assert_same(loaded, model.state_dict())


def test_bad_arguments_are_refused(tmp_path):
    model = tiny_transformer(seed=7)
    with pytest.raises(ValueError, match=r"kind must be 'student' .* or 'teacher' .*got 'critic'"):
        save_transformer(tmp_path / "m.safetensors", model, kind="critic")
    with pytest.raises(ValueError, match=r"config is required .*dict.*config=model\.config"):
        save_transformer(tmp_path / "m.safetensors", model.state_dict(), kind="student")
    with pytest.raises(ValueError, match=r"ends in '\.pt'.*\.safetensors"):
        save_transformer(tmp_path / "m.pt", model, kind="student")
    with pytest.raises(ValueError, match=r"dtype must be None .*got torch\.float8_e4m3fn"):
        save_transformer(tmp_path / "m.safetensors", model, kind="student", dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"contradicts .*fashionchameleon\.kind"):
        save_transformer(tmp_path / "m.safetensors", model, kind="student", metadata={KIND_METADATA_KEY: "teacher"})
    with pytest.raises(TypeError, match=r"strings to strings.*'step': 7"):
        save_transformer(tmp_path / "m.safetensors", model, kind="student", metadata={"step": 7})
    with pytest.raises(ValueError, match=r"missing 0 keys .*unexpected 1 keys \['lora\.weight'\]"):
        save_transformer(tmp_path / "m.safetensors", {**model.state_dict(), "lora.weight": torch.zeros(2)},
                         kind="student", config=model.config)  # fmt: skip
    with pytest.raises(ValueError, match=r"shape mismatch for 'patch_embedding\.weight'"):
        save_transformer(tmp_path / "m.safetensors", model.state_dict(), kind="student",
                         config=replace(model.config, in_dim=16, out_dim=48))  # fmt: skip
    odd = replace(model.config, eps=1e-5)  # not stored in any shape: the loader could not give it back
    with pytest.raises(ValueError, match=r"cannot be stored.*eps=1e-05 \(reads back as 1e-06\)"):
        save_transformer(tmp_path / "m.safetensors", model.state_dict(), kind="student", config=odd)
    assert not list(tmp_path.iterdir())  # every refusal came before a byte was written


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    model = tiny_transformer(seed=8)
    path = save_transformer(tmp_path / "m.safetensors", model, kind="teacher")
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.Tensor, "numpy", fail)
    with pytest.raises(KeyboardInterrupt):
        save_transformer(path, tiny_transformer(seed=9), kind="student")
    assert list(tmp_path.iterdir()) == [path] and path.read_bytes() == before  # the old file is intact


# --- VAE -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["wan2.1-tiny", "wan2.2-tiny"])
def test_vae_round_trip_decodes_identically(tmp_path, family):
    original = build_vae(family, seed=2)
    path = save_vae(tmp_path / "vae.safetensors", original, metadata={"source": "test"})
    loaded = load_vae(path)
    assert loaded.config == original.config
    latents = torch.randn(1, original.config.z_dim, 2, 2, 2)
    torch.testing.assert_close(loaded.decode(latents), original.decode(latents), atol=0, rtol=0)
    with safe_open(str(path), "pt") as f:  # the original Wan names, readable by the reference library
        assert sorted(f.keys()) == sorted(original.model.state_dict())
        assert f.metadata() == {"source": "test", FORMAT_VERSION_KEY: "1"}


def test_vae_from_a_prefixed_state_dict(tmp_path):
    original = build_vae("wan2.2-tiny", seed=3)
    comfy = {"first_stage_model." + k: v for k, v in original.model.state_dict().items()}
    path = save_vae(tmp_path / "vae.safetensors", comfy)
    with safe_open(str(path), "pt") as f:
        assert not any(k.startswith("first_stage_model.") for k in f.keys())
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    torch.testing.assert_close(load_vae(path).encode(video), original.encode(video), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"not a Wan VAE checkpoint.*first keys"):
        save_vae(tmp_path / "x.safetensors", {"foo.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"ends in '\.pth'"):
        save_vae(Path(tmp_path / "x.pth"), original)
