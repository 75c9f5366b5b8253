"""Checkpoint loading: every layout round-trips to the model that wrote it, an independent implementation (diffusers)
agrees with the loaded model, memory stays at one copy of the weights, and bad input gets an error that says what."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from chameleon_core.config import PRESETS, WanConfig
from chameleon_core.checkpoints import (
    detect_layout,
    infer_config,
    inspect_checkpoint,
    iter_checkpoint_tensors,
    load_transformer,
    load_vae,
    read_state_dict_shapes,
    resolve_checkpoint_files,
)
from chameleon_core.model import WanModel
from tests.tiny_models import tiny_transformer
from chameleon_core.checkpoints.layout_writers import write_transformer_checkpoint

REPO = Path(__file__).resolve().parents[1]

#: A custom (non-preset) shape: 3 layers, Wan2.1 latents, odd ffn and text widths.
CUSTOM = WanConfig(dim=256, ffn_dim=320, num_heads=2, num_layers=3, in_dim=16, out_dim=16, text_dim=48)

SUFFIX = {"training": ".pt"}


def _inputs(config: WanConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, config.in_dim, 2, 4, 4, generator=g)
    t = torch.tensor([637.0])
    ctx = torch.randn(1, 5, config.text_dim, generator=g)
    return x, t, ctx


@torch.no_grad()
def _forward(model: WanModel, config: WanConfig) -> torch.Tensor:
    return model(*_inputs(config))


def _write(model_or_sd, tmp_path: Path, layout: str, name: str = "model", **kw) -> Path:
    path = tmp_path / (name + SUFFIX.get(layout, ".safetensors"))
    return write_transformer_checkpoint(model_or_sd, path, layout=layout, **kw)


def _assert_same_weights(model: WanModel, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert torch.equal(got[k], v), k


# ---------------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [PRESETS["tiny"], CUSTOM], ids=["tiny", "custom"])
@pytest.mark.parametrize("layout", ["wan", "comfyui", "diffusers", "training"])
def test_layout_round_trip_gives_the_writers_outputs(tmp_path, layout, config):
    model = tiny_transformer(seed=1, config=config)
    path = _write(model, tmp_path, layout)
    assert detect_layout(read_state_dict_shapes(path)) == layout

    # Every field is inferred from shapes but text_len, which the safetensors writers store in the metadata; a .pt
    # has no metadata: it gets the default of every released Wan unless the caller says otherwise.
    if layout == "training":
        assert inspect_checkpoint(path).config == replace(config, text_len=512)
    text_len = config.text_len if layout == "training" else None
    loaded = load_transformer(path, dtype=torch.float32, device="cpu", text_len=text_len)

    assert loaded.config == config
    assert loaded.config.name == ("tiny" if config == PRESETS["tiny"] else "custom")
    _assert_same_weights(loaded, model.state_dict())
    torch.testing.assert_close(_forward(loaded, config), _forward(model, config), rtol=0, atol=0)
    assert not loaded.training and not any(p.requires_grad or p.is_meta for p in loaded.parameters())


@pytest.mark.parametrize("prefix", ["", "transformer."])
def test_diffusers_with_and_without_prefix(tmp_path, prefix):
    model = tiny_transformer(seed=2)
    path = _write(model, tmp_path, "diffusers", prefix=prefix)
    assert all(k.startswith(prefix) for k in read_state_dict_shapes(path))
    _assert_same_weights(load_transformer(path, dtype=torch.float32), model.state_dict())


def test_sharded_checkpoint_by_folder_index_and_pipeline_folder(tmp_path):
    model = tiny_transformer(seed=3, config=CUSTOM)
    index = write_transformer_checkpoint(model, tmp_path / "pipe" / "transformer", layout="diffusers", shards=3)
    assert len(resolve_checkpoint_files(index)) == 3
    for path in (index, index.parent, tmp_path / "pipe"):  # index json, model folder, diffusers pipeline folder
        _assert_same_weights(load_transformer(path, dtype=torch.float32), model.state_dict())


@pytest.mark.parametrize(
    ("stored", "compute"),
    [
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.bfloat16),
        (torch.float32, torch.bfloat16),
        (torch.float32, torch.float16),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_stored_dtype_is_converted_to_the_compute_dtype(tmp_path, stored, compute):
    model = tiny_transformer(seed=4)
    path = _write(model, tmp_path, "wan", dtype=stored)
    loaded = load_transformer(path, dtype=compute)
    _assert_same_weights(loaded, {k: v.to(stored).to(compute) for k, v in model.state_dict().items()})
    assert inspect_checkpoint(path).stored_dtype == stored


def test_inspect_reads_headers_and_metadata(tmp_path):
    path = _write(tiny_transformer(), tmp_path, "comfyui", dtype=torch.bfloat16, metadata={"fashionchameleon.kind": "x"})
    info = inspect_checkpoint(path)
    assert (info.layout, info.config.name, info.stored_dtype) == ("comfyui", "tiny", torch.bfloat16)
    assert info.metadata == {"fashionchameleon.kind": "x", "fashionchameleon.text_len": "16"}
    assert info.files == (path,) and info.config.text_len == 16
    assert info.num_params == sum(p.numel() for p in tiny_transformer().parameters())


def _dequantize_independently(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a ComfyUI scaled-fp8 file, read with the safetensors library: ``weight.float() * scale``."""
    out = {}
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        for k in keys:
            if k.endswith((".scale_weight", ".scale_input", "scaled_fp8")):
                continue
            w = f.get_tensor(k).float()
            scale_key = k[: -len(".weight")] + ".scale_weight"
            if scale_key in keys:
                s = f.get_tensor(scale_key).float()
                w = w * (s if s.numel() == 1 else s.reshape(-1, *([1] * (w.ndim - 1))))
            out[k.removeprefix("model.diffusion_model.")] = w
    return out


@pytest.mark.parametrize("compute", [torch.float32, torch.bfloat16])
def test_comfyui_scaled_fp8_is_dequantized(tmp_path, compute):
    model = tiny_transformer(seed=5)
    path = _write(model, tmp_path, "comfyui-fp8", dtype=torch.bfloat16)
    with safe_open(str(path), "pt") as f:
        assert f.get_tensor("model.diffusion_model.blocks.0.ffn.0.weight").dtype == torch.float8_e4m3fn
        assert "model.diffusion_model.blocks.0.ffn.0.scale_input" in f.keys()
    expected = _dequantize_independently(path)

    loaded = load_transformer(path, dtype=compute)

    _assert_same_weights(loaded, {k: v.to(compute) for k, v in expected.items()})
    info = inspect_checkpoint(path)
    assert (info.layout, info.stored_dtype) == ("comfyui-fp8", torch.float8_e4m3fn)
    if compute == torch.float32:  # fp8 keeps the function: outputs stay close to the full-precision model's
        ref = _forward(model, model.config)
        err = (_forward(loaded, model.config) - ref).norm() / ref.norm()
        assert err < 0.1, err


def test_scaled_fp8_with_one_scale_per_output_row(tmp_path):
    model = tiny_transformer(seed=6)
    w = model.state_dict()["blocks.1.self_attn.q.weight"]
    scale = w.abs().amax(dim=1) / 448.0  # [out]
    sd = load_file(str(_write(model, tmp_path, "comfyui-fp8")))
    sd["model.diffusion_model.blocks.1.self_attn.q.weight"] = (w / scale[:, None]).to(torch.float8_e4m3fn)
    sd["model.diffusion_model.blocks.1.self_attn.q.scale_weight"] = scale
    save_file(sd, str(tmp_path / "rows.safetensors"))
    expected = _dequantize_independently(tmp_path / "rows.safetensors")
    loaded = load_transformer(tmp_path / "rows.safetensors", dtype=torch.float32)
    _assert_same_weights(loaded, expected)


def test_unscaled_fp8_weights_are_upcast(tmp_path):
    model = tiny_transformer(seed=7)
    path = _write(model, tmp_path, "comfyui", dtype=torch.float8_e5m2)
    loaded = load_transformer(path, dtype=torch.bfloat16)
    _assert_same_weights(loaded, {k: v.to(torch.float8_e5m2).float().bfloat16() for k, v in model.state_dict().items()})


def test_training_checkpoint_prefers_ema_and_which_picks(tmp_path):
    ema, gen = tiny_transformer(seed=8), tiny_transformer(seed=9)
    path = _write(ema, tmp_path, "training", generator=gen)
    raw = torch.load(path, weights_only=True)
    assert any("_fsdp_wrapped_module." in k for k in raw["generator_ema"])

    _assert_same_weights(load_transformer(path, dtype=torch.float32), ema.state_dict())
    _assert_same_weights(load_transformer(path, dtype=torch.float32, which="generator"), gen.state_dict())
    assert inspect_checkpoint(path).state_dict == "generator_ema"
    with pytest.raises(ValueError, match=r"which='critic'.*\['generator', 'generator_ema'\]"):
        load_transformer(path, dtype=torch.float32, which="critic")


def test_plain_pt_state_dict_and_legacy_format(tmp_path):
    model = tiny_transformer(seed=10)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": model.state_dict(), "step": 7}, tmp_path / "nested.pt")
    torch.save({"generator_ema": model.state_dict()}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name, layout in (("plain.pt", "wan"), ("nested.pt", "wan"), ("legacy.pt", "training")):
        assert inspect_checkpoint(tmp_path / name).layout == layout
        _assert_same_weights(load_transformer(tmp_path / name, dtype=torch.float32), model.state_dict())


def test_all_in_one_comfyui_file_loads_its_diffusion_model(tmp_path):
    model = tiny_transformer(seed=13)
    sd = load_file(str(_write(model, tmp_path, "comfyui")))
    sd["first_stage_model.decoder.conv1.weight"] = torch.zeros(4, 4)
    sd["text_encoders.umt5xxl.transformer.shared.weight"] = torch.zeros(4, 4)
    save_file(sd, str(tmp_path / "aio.safetensors"))
    _assert_same_weights(load_transformer(tmp_path / "aio.safetensors", dtype=torch.float32), model.state_dict())


def test_iter_checkpoint_tensors_reads_what_safetensors_wrote(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5),
        "bf16": torch.randn(7).bfloat16(),
        "f16": torch.randn(2, 2, 2).half(),
        "fp8": torch.randn(4, 4).to(torch.float8_e4m3fn),
        "i64": torch.arange(5),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 3),
    }
    save_file(tensors, str(tmp_path / "mixed.safetensors"))
    read = dict(iter_checkpoint_tensors(tmp_path / "mixed.safetensors"))
    assert set(read) == set(tensors)
    for k, v in tensors.items():
        assert read[k].dtype == v.dtype and read[k].shape == v.shape, k
        assert torch.equal(read[k].reshape(-1).view(torch.uint8), v.reshape(-1).view(torch.uint8)), k  # bitwise


def test_tiny_shapes_do_not_take_the_tiny_presets_text_len(tmp_path):
    """text_len is the checkpoint's (metadata), else 512, never the preset's that the shapes happen to match."""
    tiny = PRESETS["tiny"]
    assert tiny.text_len != 512  # the bug needs a preset whose text_len differs from the default
    sd = tiny_transformer(seed=14).state_dict()  # a plain state dict: the writer adds no metadata
    bare = _write(sd, tmp_path, "wan", name="bare")
    assert inspect_checkpoint(bare).metadata == {}
    info = inspect_checkpoint(bare)
    assert (info.config.name, info.config.text_len) == ("tiny", 512)
    assert infer_config(read_state_dict_shapes(bare)).text_len == 512
    assert load_transformer(bare, dtype=torch.float32).config == replace(tiny, text_len=512)

    tagged = _write(sd, tmp_path, "comfyui", name="tagged", metadata={"fashionchameleon.text_len": "24"})
    assert load_transformer(tagged, dtype=torch.float32).config == replace(tiny, text_len=24)
    assert inspect_checkpoint(tagged, text_len=7).config.text_len == 7  # an explicit argument wins
    model = tiny_transformer(seed=14)  # a model: the test writer stores its config's text_len (16)
    assert load_transformer(_write(model, tmp_path, "wan", name="model"), dtype=torch.float32).config == tiny

    bad = _write(sd, tmp_path, "wan", name="bad", metadata={"fashionchameleon.text_len": "many"})
    with pytest.raises(ValueError, match=r"fashionchameleon\.text_len='many' is not a positive whole number"):
        load_transformer(bad, dtype=torch.float32)
    newer = _write(sd, tmp_path, "wan", name="newer", metadata={"fashionchameleon.format_version": "99"})
    with pytest.raises(ValueError, match=r"checkpoint format 99.*update the FashionChameleon node pack"):
        inspect_checkpoint(newer)


@pytest.mark.parametrize("name", ["wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.2-ti2v-5b"])
def test_released_shapes_infer_their_preset(name, reference_layout):
    layout = reference_layout(f"{name}.transformer")
    config = infer_config(layout["tensors"])
    assert config == PRESETS[name] and config.name == name
    assert config.num_heads == layout["config"]["num_heads"] and config.text_len == layout["config"]["text_len"]
    comfy = {"model.diffusion_model." + k: v for k, v in layout["tensors"].items()}
    assert detect_layout(comfy) == "comfyui" and detect_layout(layout["tensors"]) == "wan"


def test_detect_layout_by_names():
    assert detect_layout(["generator", "generator_ema", "step"]) == "training"
    assert detect_layout(["model.blocks.0.self_attn.q.weight", "model.patch_embedding.weight"]) == "training"
    assert detect_layout(["blocks.0._fsdp_wrapped_module.self_attn.q.weight"]) == "training"
    assert detect_layout(["transformer.condition_embedder.time_proj.weight"]) == "diffusers"
    assert detect_layout(["blocks.0.attn1.to_q.weight", "proj_out.weight"]) == "diffusers"
    assert detect_layout(["blocks.0.self_attn.q.weight", "blocks.0.self_attn.q.scale_weight"]) == "comfyui-fp8"
    comfy_fp8 = ["model.diffusion_model.scaled_fp8", "model.diffusion_model.head.head.weight"]
    assert detect_layout(comfy_fp8) == "comfyui-fp8"


# ---------------------------------------------------------------------------------------------------------------
# An independent implementation: diffusers' WanTransformer3DModel
# ---------------------------------------------------------------------------------------------------------------


def test_diffusers_model_and_loaded_model_agree(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=48, freq_dim=256, ffn_dim=320, num_layers=3,
    ).eval()  # fmt: skip
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in ref.parameters():  # default init leaves zero outputs (zero-init projections); make them matter
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    sd = {"transformer." + k: v.contiguous() for k, v in ref.state_dict().items()}  # diffusers' own names
    save_file(sd, str(tmp_path / "d.safetensors"))

    model = load_transformer(tmp_path / "d.safetensors", dtype=torch.float32)
    assert model.config == CUSTOM

    x = torch.randn(2, 16, 3, 8, 8, generator=g)
    # Exactly text_len tokens: the model zero-pads a shorter prompt to text_len, diffusers does not.
    ctx = torch.randn(2, model.config.text_len, 48, generator=g)
    tokens = 3 * 4 * 4
    for t in (torch.tensor([500.0, 20.0]), 1000 * torch.rand(2, tokens, generator=g)):  # [B] and per token (Wan2.2)
        with torch.no_grad():
            ours = model(x, t, ctx)
            theirs = ref(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        assert ours.abs().mean() > 0.1  # not trivially small
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Memory: one copy of the weights
# ---------------------------------------------------------------------------------------------------------------

_MEASURE = textwrap.dedent(
    """
    import json, sys, threading, time, torch
    from chameleon_core.config import PRESETS
    from chameleon_core.checkpoints import load_transformer
    from chameleon_core.model import WanModel

    # Building the first model on the meta device imports and initialises ~70 MB of torch machinery, whatever the
    # model's size; do it before measuring so that only memory that scales with the weights is counted.
    with torch.device("meta"):
        WanModel(PRESETS["tiny"])

    def status():
        with open("/proc/self/status") as f:
            fields = (ln.split(":", 1) for ln in f)
            return {k: int(v.split()[0]) * 1024 for k, v in fields if k in ("VmHWM", "VmRSS", "RssAnon")}

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak RSS) to the current RSS
    base = status()
    peak_anon, done = base["RssAnon"], False

    def sample():  # anonymous memory has no high-water mark of its own
        global peak_anon
        while not done:
            peak_anon = max(peak_anon, status()["RssAnon"])
            time.sleep(0.002)

    thread = threading.Thread(target=sample)
    thread.start()
    model = load_transformer(sys.argv[1], dtype=torch.float32)
    done = True
    thread.join()
    after = status()
    print(json.dumps({
        "rss_peak_growth": after["VmHWM"] - base["VmRSS"],
        "anon_peak_growth": max(peak_anon, after["RssAnon"]) - base["RssAnon"],
        "model_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    }))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux only)")
def test_load_holds_one_copy_of_the_weights(tmp_path):
    config = WanConfig(dim=1024, ffn_dim=4096, num_heads=8, num_layers=3, in_dim=16, out_dim=16, text_dim=64)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanModel(config).state_dict().items()}
    sd = {k: torch.full(s, 0.01) for k, s in shapes.items()}  # ~240 MB of fp32
    paths = [_write(sd, tmp_path, "wan"), _write(sd, tmp_path, "training")]
    del sd
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for path in paths:
        cmd = [sys.executable, "-c", _MEASURE, str(path)]
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        assert run.returncode == 0, run.stderr[-3000:]
        m = json.loads(run.stdout.strip().splitlines()[-1])
        size = path.stat().st_size
        assert m["model_bytes"] > 0.95 * size  # the weights really are in memory after the load
        # Converted weights are the only anonymous memory: one copy, plus at most one tensor in flight.
        assert m["anon_peak_growth"] < 1.2 * size, (path.name, m, size)
        if path.suffix == ".safetensors":
            # Positioned reads map no file pages, so the whole RSS, page for page, stays at one copy. (A .pt is
            # memory-mapped: its clean file pages also count in RSS, though the kernel reclaims them under pressure.)
            assert m["rss_peak_growth"] < 1.2 * size, (path.name, m, size)


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_missing_path_says_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no file or folder at .*nope\.safetensors"):
        load_transformer(tmp_path / "nope.safetensors", dtype=torch.float32)
    (tmp_path / "empty" / "transformer").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"searched the folders .*empty'.*empty/transformer'.*notes\.txt"):
        load_transformer(tmp_path / "empty", dtype=torch.float32)


def test_missing_shard_is_named(tmp_path):
    index = write_transformer_checkpoint(tiny_transformer(), tmp_path / "sharded", shards=2)
    (index.parent / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 are missing.*00002-of-00002"):
        load_transformer(index.parent, dtype=torch.float32)


def test_unknown_layout_lists_first_keys(tmp_path):
    save_file({"foo.weight": torch.zeros(2), "bar.bias": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match=r"unknown checkpoint layout.*first keys: \['bar\.bias', 'foo\.weight'\]"):
        load_transformer(tmp_path / "x.safetensors", dtype=torch.float32)


def test_vae_and_text_encoder_are_named(tmp_path, reference_layout):
    vae_names = list(reference_layout("wan2.1-vae")["tensors"])[:12]
    save_file({k: torch.zeros(1) for k in vae_names}, str(tmp_path / "vae.safetensors"))
    with pytest.raises(ValueError, match=r"this is a VAE checkpoint.*not a Wan transformer.*VAE loader"):
        load_transformer(tmp_path / "vae.safetensors", dtype=torch.float32)
    t5 = ["shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight", "encoder.final_layer_norm.weight"]
    save_file({k: torch.zeros(1) for k in t5}, str(tmp_path / "t5.safetensors"))
    with pytest.raises(ValueError, match=r"this is a text-encoder checkpoint.*CLIPLoader"):
        load_transformer(tmp_path / "t5.safetensors", dtype=torch.float32)
    wan_t5 = ["token_embedding.weight", "blocks.0.attn.q.weight", "blocks.0.ffn.gate.0.weight", "norm.weight"]
    assert pytest.raises(ValueError, detect_layout, wan_t5).match("text-encoder")


def test_shape_mismatch_names_expected_and_got(tmp_path):
    sd = tiny_transformer(config=CUSTOM).state_dict()
    sd["blocks.1.cross_attn.k.weight"] = torch.zeros(256, 128)
    expected = r"shape mismatch for 'blocks\.1\.cross_attn\.k\.weight'.*expected \[256, 256\].*got \[256, 128\]"
    with pytest.raises(ValueError, match=expected):
        load_transformer(_write(sd, tmp_path, "wan"), dtype=torch.float32)
    sd = tiny_transformer(config=CUSTOM).state_dict()
    sd["blocks.2.ffn.0.weight"] = torch.zeros(512, 256)  # the inferred ffn_dim (320) comes from block 0
    expected = r"'blocks\.2\.ffn\.0\.weight' \(stored as 'model\.diffusion_model\.blocks\.2\.ffn\.0\.weight'\)"
    expected += r".*expected \[320, 256\].*got \[512, 256\]"
    with pytest.raises(ValueError, match=expected):
        load_transformer(_write(sd, tmp_path, "comfyui"), dtype=torch.float32)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd = tiny_transformer().state_dict()
    del sd["blocks.1.ffn.2.bias"]
    with pytest.raises(ValueError, match=r"missing 1 keys the model needs: \['blocks\.1\.ffn\.2\.bias'\]"):
        load_transformer(_write(sd, tmp_path, "wan"), dtype=torch.float32)
    sd = tiny_transformer().state_dict()
    sd["blocks.0.lora_down.weight"] = torch.zeros(4, 256)
    expected = r"1 unexpected keys .*\['model\.diffusion_model\.blocks\.0\.lora_down\.weight'\]"
    with pytest.raises(ValueError, match=expected):
        load_transformer(_write(sd, tmp_path, "comfyui"), dtype=torch.float32)
    sd = {k: v for k, v in tiny_transformer(config=CUSTOM).state_dict().items() if not k.startswith("blocks.1.")}
    with pytest.raises(ValueError, match=r"not numbered 0\.\.N-1.*missing blocks \[1\]"):
        load_transformer(_write(sd, tmp_path, "wan"), dtype=torch.float32)


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("transformer.condition_embedder.image_embedder.ff.net.0.proj.weight", "image-to-video"),
        ("transformer.blocks.0.attn2.add_k_proj.weight", "image-to-video"),
        ("img_emb.proj.1.weight", "image-to-video"),
        ("vace_blocks.0.before_proj.weight", "VACE"),
    ],
)
def test_unsupported_variants_are_named(tmp_path, key, what):
    model = tiny_transformer()
    layout = "diffusers" if key.startswith("transformer.") else "wan"
    sd = load_file(str(_write(model, tmp_path, layout, prefix="transformer." if layout == "diffusers" else None)))
    sd[key] = torch.zeros(4, 4)
    save_file(sd, str(tmp_path / "variant.safetensors"))
    with pytest.raises(ValueError, match=rf"unsupported Wan variant: '{key}' belongs to a {what}"):
        load_transformer(tmp_path / "variant.safetensors", dtype=torch.float32)


def test_truncated_files(tmp_path):
    path = _write(tiny_transformer(), tmp_path, "wan")
    data = path.read_bytes()
    for cut, name in ((len(data) // 2, "half"), (6, "header")):
        (tmp_path / f"{name}.safetensors").write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"truncated or corrupt.*has (only )?{cut} bytes.*re-download"):
            load_transformer(tmp_path / f"{name}.safetensors", dtype=torch.float32)
    pt = _write(tiny_transformer(), tmp_path, "training")
    (tmp_path / "half.pt").write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cannot read .*half\.pt.*truncated.*re-download"):
        load_transformer(tmp_path / "half.pt", dtype=torch.float32)


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickled_code_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    payload = {"generator_ema": {"w": torch.zeros(2)}, "extra": _Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    for call in (load_transformer, read_state_dict_shapes):
        with pytest.raises(ValueError, match=r"refusing to load .*evil\.pt.*pickled Python objects.*Re-save"):
            call(path)
    assert not marker.exists()


def test_bad_arguments(tmp_path):
    path = _write(tiny_transformer(), tmp_path, "wan")
    with pytest.raises(ValueError, match=r"dtype must be one of .*got torch\.float8_e4m3fn"):
        load_transformer(path, dtype=torch.float8_e4m3fn)
    with pytest.raises(TypeError, match=r"dtype must be a torch\.dtype .*got 'bf16'"):
        load_transformer(path, dtype="bf16")
    with pytest.raises(ValueError, match=r"which='generator' picks a state dict inside a training checkpoint"):
        load_transformer(path, dtype=torch.float32, which="generator")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unsupported checkpoint file type '\.onnx'"):
        load_transformer(tmp_path / "model.onnx", dtype=torch.float32)


def test_heads_not_128_wide_are_refused(tmp_path):
    model = WanModel(WanConfig(dim=192, ffn_dim=256, num_heads=3, num_layers=1, in_dim=16, out_dim=16, text_dim=32))
    with pytest.raises(ValueError, match=r"dim=192 is not a multiple of the head dim 128"):
        load_transformer(_write(model, tmp_path, "wan"), dtype=torch.float32)


@pytest.mark.gpu
def test_loads_onto_cuda(tmp_path):
    model = tiny_transformer(seed=12)
    path = _write(model, tmp_path, "comfyui-fp8")
    cpu = load_transformer(path, dtype=torch.bfloat16, device="cpu")
    gpu = load_transformer(path, dtype=torch.bfloat16, device="cuda")
    assert all(p.device.type == "cuda" for p in gpu.parameters())
    _assert_same_weights(gpu.cpu(), cpu.state_dict())


def test_checkpoint_kind_from_metadata_training_layout_and_name(tmp_path):
    from chameleon_core.checkpoints import KIND_METADATA_KEY, checkpoint_kind
    from tests.tiny_models import tiny_transformer
    from chameleon_core.checkpoints.layout_writers import write_transformer_checkpoint

    model = tiny_transformer(0)
    tagged = write_transformer_checkpoint(model, tmp_path / "a.safetensors", metadata={KIND_METADATA_KEY: "student"})
    assert checkpoint_kind(tagged) == "student"
    assert checkpoint_kind(write_transformer_checkpoint(model, tmp_path / "b.pt", layout="training")) == "student"
    assert checkpoint_kind(write_transformer_checkpoint(model, tmp_path / "self_forcing_dmd.safetensors")) == "student"
    assert checkpoint_kind(write_transformer_checkpoint(model, tmp_path / "wan2.2_ti2v_5B.safetensors")) == "teacher"
    bad = write_transformer_checkpoint(model, tmp_path / "c.safetensors", metadata={KIND_METADATA_KEY: "critic"})
    with pytest.raises(ValueError, match="neither 'student' nor 'teacher'"):
        checkpoint_kind(bad)


# --- issue 13: one error type, never "malicious" for damage, non-regular files refused, CUDA said ---------------------


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", r"empty \(0 bytes\), not a PyTorch checkpoint.*re-download"),
        (b"step: 1000\nloss: 0.1\n" * 10, r"not a PyTorch checkpoint or is corrupt: it starts with the text"),
        (bytes(range(7, 250)) * 20, r"not a PyTorch checkpoint or is corrupt: it starts with the bytes"),
    ],
    ids=["empty", "text", "random-bytes"],
)
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_damaged_pt_files_get_one_error_that_does_not_call_them_malicious(tmp_path, content, words, suffix):
    from chameleon_core.checkpoints import CheckpointError

    path = tmp_path / f"student{suffix}"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=words) as info:
        load_transformer(path)
    message = str(info.value)
    assert path.name in message and "malicious" not in message and "pickled Python objects" not in message
    assert "weights_only=False" not in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
def test_fifo_named_safetensors_is_refused_without_opening(tmp_path):
    from chameleon_core.checkpoints import CheckpointError

    fifo = tmp_path / "student.safetensors"
    os.mkfifo(fifo)  # opening it for reading would block forever; the loader only stats it
    for call in (load_transformer, inspect_checkpoint, load_vae):
        with pytest.raises(CheckpointError, match=r"student\.safetensors is a named pipe \(FIFO\), not a regular file"):
            call(fifo)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    path = _write(tiny_transformer(), tmp_path, "wan")
    with pytest.raises(ValueError, match=r"device 'cuda'.*sees no CUDA device.*device='cpu'"):
        load_transformer(path, device="cuda")


def test_every_load_error_is_a_checkpoint_error_and_a_value_error(tmp_path):
    from chameleon_core.checkpoints import CheckpointError, CheckpointNotFoundError

    assert issubclass(CheckpointError, ValueError) and issubclass(CheckpointNotFoundError, FileNotFoundError)
    with pytest.raises(CheckpointNotFoundError, match="checkpoint not found"):
        load_transformer(tmp_path / "missing.safetensors")
    (tmp_path / "vae.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match=r"vae\.safetensors is truncated or corrupt"):
        load_vae(tmp_path / "vae.safetensors")
