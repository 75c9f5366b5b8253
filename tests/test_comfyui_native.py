"""Streaming from a native ComfyUI MODEL, in a real ComfyUI on CPU with tiny weights (``COMFYUI_DIR`` as for
``test_comfyui_integration.py``, whose server helpers this reuses).

- The tiny student through ``UNETLoader`` + ChameleonNativeModel gives the latents of the pack's own loader.
- A tiny LoRA through ``LoraLoaderModelOnly`` gives the latents of the LoRA merged into the weights by hand (loaded
  with the pack's loader), and differs from the plain model's.
- A ComfyUI scaled-fp8 file loads both ways and agrees to fp8 rounding.
- A GGUF (Q8_0) file written with the ``gguf`` package streams through city96/ComfyUI-GGUF's loader (skipped with
  the reason when the pack is not given: ``COMFYUI_GGUF_DIR`` pointing at a checkout, ``gguf`` in ComfyUI's venv).
- The example workflow ``native_model_stream`` (UNETLoader -> LoraLoaderModelOnly -> ModelSamplingSD3 -> native
  model -> stream) runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.test_comfyui_integration import (
    COMFYUI_DIR,
    REPO,
    Server,
    _base_with,
    _comfy_python,
    _error,
    _free_port,
    _stop,
    load_api,
    start_tiny_server,
    tiny,
)

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set: point it at a ComfyUI checkout to run the "
                                               "real-ComfyUI integration test"),
]
GGUF_DIR = os.environ.get("COMFYUI_GGUF_DIR")
STUDENT = "chameleon_tiny_student.safetensors"
MERGED = "chameleon_tiny_student_lora_merged.safetensors"
FP8 = "chameleon_tiny_student_fp8.safetensors"
FP8_BIAS = "chameleon_tiny_student_fp8_bias.safetensors"
GGUF = "chameleon_tiny_student_q8_0.gguf"
LORA = "chameleon_tiny_lora.safetensors"
PREFIX = "model.diffusion_model."
LORA_TARGETS = {"blocks.0.self_attn.q": 4, "blocks.1.ffn.0": 4, "blocks.0.cross_attn.v": 2}
LORA_ALPHA = 2.0
LORA_STRENGTH = 0.8


def _gguf_available() -> str | None:
    """None when the GGUF test can run, else why not."""
    if not GGUF_DIR or not (Path(GGUF_DIR) / "nodes.py").exists():
        return "COMFYUI_GGUF_DIR does not point at a city96/ComfyUI-GGUF checkout"
    ok = subprocess.run([_comfy_python(), "-c", "import gguf"], capture_output=True, check=False).returncode == 0
    return None if ok else "the gguf package is not installed in ComfyUI's Python (pip install gguf)"


def write_lora(path: Path, seed: int = 11) -> dict[str, torch.Tensor]:
    """A LoRA in the kohya-style names ComfyUI reads (``diffusion_model.<module>.lora_up/lora_down/alpha``); returns
    the weight delta per module at strength 1."""
    g = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    sd = load_file(path.parents[1] / "diffusion_models" / STUDENT)
    for module, rank in LORA_TARGETS.items():
        out_dim, in_dim = sd[PREFIX + module + ".weight"].shape
        up = torch.randn(out_dim, rank, generator=g) * 0.05
        down = torch.randn(rank, in_dim, generator=g) * 0.05
        tensors[f"diffusion_model.{module}.lora_up.weight"] = up
        tensors[f"diffusion_model.{module}.lora_down.weight"] = down
        tensors[f"diffusion_model.{module}.alpha"] = torch.tensor(LORA_ALPHA)
        deltas[module] = (LORA_ALPHA / rank) * (up @ down)
    save_file(tensors, str(path))
    return deltas


def write_variants(models: Path) -> None:
    """The LoRA, the LoRA merged by hand, the scaled-fp8 file (and the GGUF file when ``gguf`` imports here)."""
    from chameleon_core.checkpoints.layout_writers import write_transformer_checkpoint

    src = models / "diffusion_models" / STUDENT
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
    sd = load_file(src)
    (models / "loras").mkdir(exist_ok=True)
    deltas = write_lora(models / "loras" / LORA)
    merged = dict(sd)
    for module, delta in deltas.items():
        merged[PREFIX + module + ".weight"] = sd[PREFIX + module + ".weight"] + LORA_STRENGTH * delta
    save_file(merged, str(models / "diffusion_models" / MERGED), metadata=metadata)
    plain = {k[len(PREFIX):]: v for k, v in sd.items()}
    write_transformer_checkpoint(plain, models / "diffusion_models" / FP8, layout="comfyui-fp8", metadata=metadata)
    # ComfyUI holds a scaled-fp8 file's linear biases in fp8 too (unscaled): the same file with those biases rounded
    # so beforehand is what ComfyUI computes with.
    rounded = {k: v.to(torch.float8_e4m3fn).float() if k.endswith(".bias") and plain[k[:-5] + ".weight"].ndim == 2
               else v for k, v in plain.items()}
    write_transformer_checkpoint(rounded, models / "diffusion_models" / FP8_BIAS, layout="comfyui-fp8",
                                 metadata=metadata)


def write_gguf(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """A GGUF file as ComfyUI-GGUF reads it: arch ``wan``, 2-d weights in Q8_0, the rest in F32; tensors of more than
    4 dims flattened to 2-d with their shape in ``comfy.gguf.orig_shape.<name>``."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch="wan")
    for name, tensor in state_dict.items():
        data = tensor.float().numpy()
        quantize = data.ndim == 2 and data.shape[-1] % 32 == 0  # linear weights; the conv stays F32
        if data.ndim > 4:
            writer.add_array(f"comfy.gguf.orig_shape.{name}", [int(d) for d in data.shape])
            data = data.reshape(data.shape[0], -1)
        if quantize:
            qtype = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A CPU ComfyUI with this pack (and ComfyUI-GGUF when given), the tiny files and their variants."""
    python, base = _base_with(tmp_path_factory, "comfyui_native", "tiny_checkpoints")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    write_variants(base / "models")
    if _gguf_available() is None:
        (base / "custom_nodes" / "ComfyUI-GGUF").symlink_to(Path(GGUF_DIR).resolve(), target_is_directory=True)
        script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from safetensors.torch import load_file;"
                  f"from tests.test_comfyui_native import write_gguf, PREFIX; from pathlib import Path;"
                  f"sd = load_file({str(base / 'models' / 'diffusion_models' / STUDENT)!r});"
                  f"write_gguf(Path({str(base / 'models' / 'diffusion_models' / GGUF)!r}),"
                  f" {{k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}})")
        subprocess.run([python, "-c", script], cwd=REPO, env=env, check=True, capture_output=True)
    proc, srv = start_tiny_server(python, base, _free_port(2))
    yield srv
    _stop(proc)


def stream_prompt(model_nodes: dict, frames: int = 21) -> dict:
    """The tiny single-garment stream with the student loader replaced by ``model_nodes`` (whose node ``"1"``
    outputs the CHAMELEON_MODEL) and the generated latents saved."""
    prompt = tiny(load_api("single_garment_stream"))
    del prompt["1"]
    prompt.update(json.loads(json.dumps(model_nodes)))
    gen = next(k for k, v in prompt.items() if v["class_type"] == "ChameleonStreamGenerate")
    prompt[gen]["inputs"]["frames"] = frames
    prompt["latents_out"] = {"class_type": "SaveLatent", "inputs": {"samples": [gen, 1], "filename_prefix": "lat"}}
    return prompt


def ours(ckpt: str) -> dict:
    return {"1": {"class_type": "ChameleonStudentLoader", "inputs": {"ckpt_name": ckpt, "weight_dtype": "default"}}}


def native(unet: dict, *patches: dict) -> dict:
    """``unet`` (a loader node returning MODEL) -> each patch node in turn -> ChameleonNativeModel as node ``"1"``."""
    nodes, prev = {"unet": unet}, "unet"
    for i, patch in enumerate(patches):
        name = f"patch{i}"
        nodes[name] = {**patch, "inputs": {**patch["inputs"], "model": [prev, 0]}}
        prev = name
    nodes["1"] = {"class_type": "ChameleonNativeModel", "inputs": {"model": [prev, 0], "kind": "student"}}
    return nodes


def unet_loader(name: str, weight_dtype: str = "default") -> dict:
    return {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": weight_dtype}}


def latents(server: Server, prompt: dict) -> torch.Tensor:
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", _error(history)
    item = history["outputs"]["latents_out"]["latents"][0]
    return load_file(server.base / "output" / item["subfolder"] / item["filename"])["latent_tensor"]


def test_unet_loader_detects_the_tiny_student_and_the_node_is_listed(server):
    info = server.get("/object_info")
    node = info["ChameleonNativeModel"]
    assert list(node["input"]["required"]) == ["model", "kind"]
    assert node["output"] == ["CHAMELEON_MODEL"]
    assert STUDENT in info["UNETLoader"]["input"]["required"]["unet_name"][0]


def test_native_model_streams_the_frames_of_our_loader(server):
    want = latents(server, stream_prompt(ours(STUDENT)))
    got = latents(server, stream_prompt(native(unet_loader(STUDENT))))
    assert got.shape == want.shape and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_native_teacher_samples_like_our_teacher_loader(server):
    def prompt(model_nodes: dict) -> dict:
        p = tiny(load_api("teacher_quality"))
        del p["1"]
        p.update(json.loads(json.dumps(model_nodes)))
        sampler = next(k for k, v in p.items() if v["class_type"] == "ChameleonTeacherSampler")
        p[sampler]["inputs"].update(steps=3, frames=9)
        p["latents_out"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0], "filename_prefix": "t"}}
        return p

    teacher = "chameleon_tiny_teacher.safetensors"
    want = latents(server, prompt({"1": {"class_type": "ChameleonTeacherLoader",
                                         "inputs": {"ckpt_name": teacher, "weight_dtype": "default"}}}))
    nodes = native(unet_loader(teacher))
    nodes["1"]["inputs"]["kind"] = "teacher"
    got = latents(server, prompt(nodes))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_lora_through_lora_loader_equals_the_lora_merged_by_hand(server):
    lora = {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": LORA, "strength_model": LORA_STRENGTH}}
    got = latents(server, stream_prompt(native(unet_loader(STUDENT), lora)))
    want = latents(server, stream_prompt(ours(MERGED)))
    plain = latents(server, stream_prompt(ours(STUDENT)))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - plain).abs().max() > 100 * (got - want).abs().max()  # the LoRA changed the frames


def test_model_sampling_sd3_sets_the_stream_shift(server):
    shift = {"class_type": "ModelSamplingSD3", "inputs": {"shift": 3.0}}
    default = latents(server, stream_prompt(native(unet_loader(STUDENT))))
    shifted = latents(server, stream_prompt(native(unet_loader(STUDENT), shift)))
    five = latents(server, stream_prompt(native(unet_loader(STUDENT), {**shift, "inputs": {"shift": 5.0}})))
    torch.testing.assert_close(five, default, rtol=1e-5, atol=1e-5)  # 5 is the student's own shift
    assert (shifted - default).abs().max() > 1e-3


def test_scaled_fp8_file_agrees_both_ways(server):
    full = latents(server, stream_prompt(ours(STUDENT)))
    mine = latents(server, stream_prompt(ours(FP8)))
    theirs = latents(server, stream_prompt(native(unet_loader(FP8))))
    # ComfyUI also rounds the linear biases to fp8: with those rounded in the file, both ways compute the same.
    mine_rounded_bias = latents(server, stream_prompt(ours(FP8_BIAS)))
    torch.testing.assert_close(theirs, mine_rounded_bias, rtol=1e-4, atol=1e-4)
    rounding = (mine - full).abs().max()
    assert rounding > 0, "the fp8 file should differ from the full-precision weights"
    assert (theirs - mine).abs().max() < 0.5 * rounding  # the two loads differ by less than fp8 rounding itself


def test_gguf_model_streams_through_comfyui_gguf(server):
    reason = _gguf_available()
    if reason:
        pytest.skip(reason)
    full = latents(server, stream_prompt(ours(STUDENT)))
    got = latents(server, stream_prompt(native({"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": GGUF}})))
    assert got.shape == full.shape and torch.isfinite(got).all()
    err = (got - full).abs().max() / full.abs().max()
    assert 0 < err < 0.05, float(err)  # Q8_0 rounding, not another model


def test_native_example_workflow_runs(server):
    prompt = tiny(load_api("native_model_stream"))
    for node in prompt.values():
        if node["class_type"] == "UNETLoader":
            node["inputs"]["unet_name"] = STUDENT
        elif node["class_type"] == "LoraLoaderModelOnly":
            node["inputs"]["lora_name"] = LORA
    gen = next(k for k, v in prompt.items() if v["class_type"] == "ChameleonStreamGenerate")
    prompt[gen]["inputs"]["frames"] = 21
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", _error(history)
    videos = server.video_files(history)
    assert videos and all(v.exists() and v.stat().st_size > 0 for v in videos), videos


def test_partial_loading_streams_the_same_chunks_with_lora_patches_on_the_fly():
    """ComfyUI's low-VRAM mode on the native path (half the weight bytes allowed on the device: the rest is cast per
    call, LoRA patches applied by the modules themselves) streams the chunks of our fully loaded model with the LoRA
    merged by hand. Runs the benchmark command at tiny size; its own check refuses a disagreeing result."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{COMFYUI_DIR}"}
    out = subprocess.run([_comfy_python(), str(REPO / "docs" / "benchmarks" / "native_offload.py"), "--preset", "tiny",
                          "--height", "64", "--width", "64", "--chunks", "2", "--budget-fraction", "0.5",
                          "--lora-rank", "4"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    modes = json.loads(out.stdout[out.stdout.index("{"):])["modes"]
    full, partial = modes["native_full"], modes["native_partial_0.5"]
    assert full["streamed_modules"] == 0 and full["max_rel_diff_vs_ours"] <= 1e-5
    assert partial["streamed_modules"] > 0 and partial["lowvram_patches"] > 0
    assert partial["loaded_weight_bytes"] < full["loaded_weight_bytes"]
    assert partial["max_rel_diff_vs_ours"] <= 1e-5
