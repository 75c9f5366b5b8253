"""Our Wan forward against ComfyUI's own ``comfy.ldm.wan.model.WanModel``: same random weights, same shapes, timed
interleaved in one run (ours, ComfyUI, ours, ...; the min of ``--repeats`` per side), fp32 and bf16, on the CPU.

Runs in ComfyUI's Python with both trees importable (the core itself never imports ComfyUI)::

    PYTHONPATH=/work/main:/work/comfyui /work/comfyui/.venv/bin/python docs/benchmarks/compare_comfyui.py \\
        --layers 2 --height 256 --width 256 --latent-frames 3 --repeats 5

ComfyUI's model is built as ComfyUI builds it for a Wan2.2-TI2V-5B file (``model_type="t2v"``, 48 latent channels,
``operations=comfy.ops.disable_weight_init``, ``dtype`` = the weight dtype, so no per-call casts), its weights set from
a seeded generator; the same tensors are written as a ComfyUI-layout file (``model.diffusion_model.`` prefix) and read
by our ``load_transformer`` at the same dtype. Both take ``(x [B, C, T, h, w], timestep [B], context [B, L, 4096])``.
Outputs must agree within the stated tolerance (relative to the output's largest magnitude) before any time counts.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}
"""max |ours - ComfyUI| / max |ComfyUI|: fp32 is reduction-order noise; bf16 rounds every op's output (and the two
models keep different parts in fp32), so a few percent of the output's range at the worst element."""
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def comfy_wan(cfg, dtype: torch.dtype):
    """ComfyUI's WanModel for our ``cfg`` (plain t2v backbone, as ComfyUI loads Wan2.2-TI2V-5B)."""
    import comfy.ldm.wan.model
    import comfy.ops

    return comfy.ldm.wan.model.WanModel(
        model_type="t2v", patch_size=tuple(cfg.patch_size), text_len=cfg.text_len, in_dim=cfg.in_dim, dim=cfg.dim,
        ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim, out_dim=cfg.out_dim,
        num_heads=cfg.num_heads, num_layers=cfg.num_layers, qk_norm=True, cross_attn_norm=cfg.cross_attn_norm,
        eps=cfg.eps, device="cpu", dtype=dtype, operations=comfy.ops.disable_weight_init,
    ).eval()


def random_weights(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights (fan-in scaled matrices, small vectors) for every tensor of ``model``'s state dict, fp32."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        sd[k] = (torch.randn(v.shape, generator=g) / max(1.0, v.shape[-1] ** 0.5) if v.ndim > 1 else
                 0.05 * torch.randn(v.shape, generator=g))
    return sd


@torch.no_grad()
def compare(layers: int, height: int, width: int, frames: int, repeats: int, seed: int = 0) -> dict:
    from safetensors.torch import save_file

    from chameleon_core.checkpoints import load_transformer
    from chameleon_core.config import preset

    cfg = replace(preset("wan2.2-ti2v-5b"), num_layers=layers)
    sd = random_weights(comfy_wan(cfg, torch.float32), seed)
    h, w = cfg.latent.latent_size(height, width, patch=cfg.patch_size[1:])
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, cfg.in_dim, frames, h, w, generator=g)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)
    t = torch.tensor([937.0])
    out = {"preset": cfg.name, "layers": layers, "latent": [frames, h, w], "tokens": frames * h * w // 4,
           "repeats": repeats, "threads": torch.get_num_threads(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "wan.safetensors"
        save_file({"model.diffusion_model." + k: v.contiguous() for k, v in sd.items()}, str(path))
        for name, dt in DTYPES.items():
            ours = load_transformer(path, dtype=dt)
            theirs = comfy_wan(cfg, dt)
            theirs.load_state_dict({k: v.to(dt) for k, v in sd.items()}, strict=True)
            xs, cs = x.to(dt), ctx.to(dt)

            def run_ours(ours=ours, xs=xs, cs=cs):
                return ours(xs, t, cs)

            def run_comfy(theirs=theirs, xs=xs, cs=cs):
                return theirs(xs, t, cs)

            a, b = run_ours().float(), run_comfy().float()  # also the warm-up
            rel = ((a - b).abs().max() / b.abs().max()).item()
            if not rel <= TOLERANCE[name]:
                raise SystemExit(f"{name}: outputs disagree: max |diff| / max |ComfyUI| = {rel:.2e} > "
                                 f"{TOLERANCE[name]:.0e}")
            times: dict[str, list[float]] = {"ours": [], "comfyui": []}
            for _ in range(repeats):
                for side, fn in (("ours", run_ours), ("comfyui", run_comfy)):
                    t0 = time.perf_counter()
                    fn()
                    times[side].append(time.perf_counter() - t0)
            out[name] = {"ours_s": round(min(times["ours"]), 4), "comfyui_s": round(min(times["comfyui"]), 4),
                         "ratio_ours_over_comfyui": round(min(times["ours"]) / min(times["comfyui"]), 3),
                         "max_rel_diff": float(f"{rel:.3g}"), "tolerance": TOLERANCE[name]}
            del ours, theirs
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--latent-frames", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = True  # as ComfyUI's --cpu: before comfy.model_management is imported
    print(json.dumps(compare(args.layers, args.height, args.width, args.latent_frames, args.repeats), indent=1))


if __name__ == "__main__":
    main()
