"""Streaming on a native ComfyUI MODEL: per-chunk cost of the native path (ChameleonNativeModel's ModuleView over
ComfyUI's own Wan modules) against the pack's own model, fully loaded and partially loaded (ComfyUI's low-VRAM mode:
the blocks that do not fit stay on the offload device and are cast to the compute device per call).

Runs in ComfyUI's Python with both trees importable (the core itself never imports ComfyUI)::

    # CPU (what is measurable here: the view's dispatch and ComfyUI's per-call casts; no PCIe, no VRAM)
    PYTHONPATH=$PWD:/work/comfyui /work/comfyui/.venv/bin/python docs/benchmarks/native_offload.py \\
        --preset wan2.2-ti2v-5b --layers 2 --height 256 --width 256 --chunks 4 --budget-fraction 0.5
    # GPU (the real question: a 5B stream with part of the weights on the host)
    PYTHONPATH=$PWD:/path/to/ComfyUI python docs/benchmarks/native_offload.py --device cuda --dtype bf16 \\
        --preset wan2.2-ti2v-5b --height 1280 --width 704 --chunks 8 --budget-fraction 0.5 0.25

Random weights at the preset's shapes (``--layers`` keeps only the first N blocks) are written as a ComfyUI-layout
file and loaded twice: by ComfyUI (``comfy.sd.load_diffusion_model``, as UNETLoader does) and by our
``load_transformer``. ``--lora-rank R`` adds a LoRA on every block's q/k/v/o through ComfyUI's
``load_lora_for_models`` (the native path) and merged by hand into our model, so the check covers LoRA patches
applied on the fly by partially loaded modules. Every mode streams the same chunks from the same seed; the outputs
must agree (``--tolerance``, relative to the largest latent) before any time counts. The modes run interleaved,
``--repeats`` streams each (one model on the device at a time); the first chunk of each stream is left out, and the
minimum and median seconds per chunk are reported (the minimum is the robust number on a shared machine). Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def lora_for(model, rank: int, seed: int) -> tuple[dict, dict]:
    """A LoRA on every block's self-attention q/k/v/o: (ComfyUI-readable tensors, weight delta per module)."""
    g = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for i, _ in enumerate(model.blocks):
        for p in ("q", "k", "v", "o"):
            name = f"blocks.{i}.self_attn.{p}"
            w = model.get_submodule(name).weight
            up = torch.randn(w.shape[0], rank, generator=g) * 0.02
            down = torch.randn(rank, w.shape[1], generator=g) * 0.02
            tensors[f"diffusion_model.{name}.lora_up.weight"] = up
            tensors[f"diffusion_model.{name}.lora_down.weight"] = down
            tensors[f"diffusion_model.{name}.alpha"] = torch.tensor(float(rank))
            deltas[name] = up @ down
    return tensors, deltas


def stream(model, inputs: dict, settings, chunks: int, sync) -> tuple[list[float], torch.Tensor]:
    """Seconds per chunk and the chunks' latents of one stream (the pack's start_stream + Rollout)."""
    from chameleon_core.streaming import Rollout, start_stream

    state = start_stream(model, context=inputs["ctx"], reference=inputs["ref"], garment=inputs["gar"], seed=0,
                         settings=settings)
    rollout = Rollout(state, collect=True)
    times = []
    for _ in range(chunks):
        sync()
        t0 = time.perf_counter()
        rollout.step()
        sync()
        times.append(time.perf_counter() - t0)
    return times, rollout.latents()


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="wan2.2-ti2v-5b")
    p.add_argument("--layers", type=int, default=None, help="keep only the first N blocks (CPU runs)")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--budget-fraction", type=float, nargs="*", default=[0.5],
                   help="partial loads: the fraction of the weight bytes allowed on the device")
    p.add_argument("--lora-rank", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="streams per mode, interleaved across the modes")
    p.add_argument("--tolerance", type=float, default=None, help="default 1e-4 (fp32) / 5e-2 (bf16, fp16)")
    args = p.parse_args()

    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = args.device == "cpu"  # as ComfyUI's --cpu (read when model management is imported)
    import comfy.model_management as mm
    import comfy.sd

    from chameleon_core.checkpoints import load_transformer
    from chameleon_core.config import StreamSettings, preset
    from chameleon_core.module_view import ModuleView
    from chameleon_core.precision import Precision
    from chameleon_core.random_models import random_transformer
    from chameleon_core.checkpoints.layout_writers import write_transformer_checkpoint

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    tol = args.tolerance or (1e-4 if dtype == torch.float32 else 5e-2)
    cfg = replace(preset(args.preset), text_dim=4096, text_len=512)  # ComfyUI builds Wan with umT5-XXL's width
    if args.layers:
        cfg = replace(cfg, num_layers=args.layers, name=f"{cfg.name}-{args.layers}l")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    with tempfile.TemporaryDirectory() as tmp:
        src = random_transformer(cfg, seed=0)
        path = write_transformer_checkpoint(src, Path(tmp) / "model.safetensors", layout="comfyui", dtype=dtype)
        lora, deltas = lora_for(src, args.lora_rank, 1) if args.lora_rank else ({}, {})
        del src
        ours = load_transformer(path, dtype=dtype, device="cpu")
        for name, delta in deltas.items():
            ours.get_submodule(name).weight.add_(delta.to(device, dtype))
        ours.clear_caches()
        patcher = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": dtype})
        if lora:
            patcher, _ = comfy.sd.load_lora_for_models(patcher, None, lora, 1.0, 0)

    g = torch.Generator().manual_seed(2)
    lat_h, lat_w = args.height // cfg.latent.spatial_stride, args.width // cfg.latent.spatial_stride
    inputs = {"ref": torch.randn(1, cfg.in_dim, 1, lat_h, lat_w, generator=g),
              "gar": torch.randn(1, cfg.in_dim, 1, lat_h, lat_w, generator=g),
              "ctx": torch.randn(1, 32, cfg.text_dim, generator=g)}
    settings = StreamSettings()
    weight_bytes = patcher.model_size()
    results = {"config": cfg.name, "layers": cfg.num_layers, "device": str(device), "dtype": args.dtype,
               "size": [args.height, args.width], "chunks": args.chunks, "lora_rank": args.lora_rank,
               "weight_bytes": weight_bytes, "modes": {}}

    compute = patcher.model.manual_cast_dtype or patcher.model.get_dtype()
    precision = Precision(compute, layer_casts=lambda m: bool(getattr(m, "comfy_cast_weights", False)))
    view = ModuleView(patcher.model.diffusion_model, precision=precision, device=device,  # as nodes/adapters/native.py
                      cast=lambda t, dt, dev: mm.cast_to(t, dtype=dt, device=dev))
    modes = {"ours": None, "native_full": 0}
    modes.update({f"native_partial_{f:g}": int(weight_bytes * f) for f in args.budget_fraction})
    times: dict[str, list[float]] = {name: [] for name in modes}
    want = None
    for _ in range(args.repeats):  # interleaved, so load on a shared machine hits every mode alike
        for name, budget in modes.items():
            if budget is None:
                ours.to(device)
                model, extra = ours, {}
            else:
                patcher.unpatch_model(device_to=patcher.offload_device)
                patcher.patch_model(device_to=device, lowvram_model_memory=budget)  # 0: full load
                streamed = sum(1 for m in patcher.model.modules() if getattr(m, "comfy_cast_weights", False)
                               and getattr(m, "prev_comfy_cast_weights", None) is not None)
                model = view
                extra = {"loaded_weight_bytes": patcher.loaded_size(), "streamed_modules": streamed,
                         "lowvram_patches": patcher.lowvram_patch_counter()}
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            chunk_times, latents = stream(model, inputs, settings, args.chunks, sync)
            if budget is None:
                ours.to("cpu")  # one model on the device at a time
                want = latents
            else:
                err = float((latents.float() - want.float()).abs().max() / want.float().abs().max())
                if not err <= tol:
                    raise SystemExit(f"{name}: differs from ours by {err:.3g} (> {tol}); not timing a wrong result")
                extra["max_rel_diff_vs_ours"] = err
            if device.type == "cuda":
                extra["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
            times[name] += chunk_times[1:] or chunk_times  # the first chunk of a stream pays one-off costs
            results["modes"][name] = extra
    patcher.unpatch_model(device_to=patcher.offload_device)
    base = min(times["ours"])
    for name, entry in results["modes"].items():
        ordered = sorted(times[name])
        entry.update(chunk_min_s=round(ordered[0], 4), chunk_median_s=round(ordered[len(ordered) // 2], 4),
                     min_vs_ours=round(ordered[0] / base, 3))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
