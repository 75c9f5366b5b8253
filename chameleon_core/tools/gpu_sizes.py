"""What each GPU size can run: an estimate from sizes alone (nothing is allocated or measured).

``python -m chameleon_core.tools.gpu_sizes [--preset wan2.2-ti2v-5b] [--cache-frames 23] [--markdown]`` prints, for
each weight format (bf16, fp8, GGUF Q8_0 / Q4_K) and resolution, the bytes of the transformer weights, of the stream
itself (:func:`~chameleon_core.memory.estimate_stream_memory`: KV cache x 2 copies while generating, one chunk's
activations) and of the streaming VAE decode, and for each GPU size whether the stream fits

- ``full``: weights + stream fit in the usable VRAM (``--usable`` of it: CUDA context, allocator slack, the desktop);
- ``partial``: the stream fits with the weights resident only in part -- ComfyUI's low-VRAM partial loading on the
  native path (ChameleonNativeModel), which casts the remaining blocks from host memory per call; at least
  ``--min-resident`` of the weights (the non-block layers plus a few blocks) must stay. Slower: every chunk moves
  the non-resident weights over PCIe once per forward (``docs/benchmarks/native_offload.py`` measures it);
- ``no``: even the stream alone does not fit.

The VAE decode runs in its own node after the stream, when model management can unload the transformer, so it is
shown apart (its weights: ~1.4 GB bf16 for the Wan2.2 VAE, also under model management). The text encoder
(umT5-XXL, ~6.7 GB fp8) is unloaded after encoding. Bits per weight of the GGUF formats are the format's
averages (Q8_0 8.5, Q4_K 4.5) over the block linears; the other tensors are counted in bf16.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from ..config import StreamSettings, WanConfig, preset
from ..memory import estimate_stream_memory, vae_decode_bytes

FORMATS = {"bf16": 16.0, "fp8": 8.0, "gguf-q8_0": 8.5, "gguf-q4_k": 4.5}
"""Bits per weight of the block linears; other tensors stay bf16."""
GPU_GIB = (8, 12, 16, 24, 32, 48, 80)
RESOLUTIONS = ((1280, 704), (832, 480), (640, 352))
VAE_WEIGHT_BYTES = int(1.41e9)
"""Wan2.2 VAE weights in bf16 (705M parameters)."""


def weight_bytes(config: WanConfig, bits: float) -> int:
    """Transformer weight bytes with the block linears at ``bits`` per weight and every other tensor in bf16."""
    from ..model import WanModel

    with torch.device("meta"):
        model = WanModel(config)
    total = 0.0
    for name, p in model.named_parameters():
        linear = name.startswith("blocks.") and p.ndim == 2
        total += p.numel() * (bits / 8 if linear else 2)
    return int(total)


def estimate_rows(config: WanConfig, settings: StreamSettings, usable: float, min_resident: float) -> list[dict]:
    from ..vae import VAE_PRESETS

    vae = VAE_PRESETS.get(config.latent.name)
    rows = []
    for width, height in RESOLUTIONS:
        tpf = config.tokens_per_frame(height, width)
        stream = estimate_stream_memory(config, settings, tpf, dtype=torch.bfloat16, device="cuda").total
        lh, lw = config.latent.latent_size(height, width)
        decode = vae_decode_bytes(vae, lh, lw, 1, torch.bfloat16) + VAE_WEIGHT_BYTES
        for fmt, bits in FORMATS.items():
            weights = weight_bytes(config, bits)
            fits = {}
            for gib in GPU_GIB:
                budget = gib * 2**30 * usable
                if weights + stream <= budget:
                    fits[gib] = "full"
                elif weights * min_resident + stream <= budget:
                    fits[gib] = "partial"
                else:
                    fits[gib] = "no"
            rows.append({"resolution": f"{width}x{height}", "format": fmt, "weights": weights, "stream": stream,
                         "decode": decode, "fits": fits})
    return rows


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f}"


def markdown(rows: list[dict]) -> str:
    head = "| resolution | weights | weights GB | stream GB | VAE decode GB | " + " | ".join(f"{g} GiB" for g in GPU_GIB)
    lines = [head + " |", "|" + "---|" * (5 + len(GPU_GIB))]
    for r in rows:
        cells = [r["resolution"], r["format"], _gb(r["weights"]), _gb(r["stream"]), _gb(r["decode"])]
        cells += [r["fits"][g] for g in GPU_GIB]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chameleon_core.tools.gpu_sizes", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="wan2.2-ti2v-5b")
    p.add_argument("--cache-frames", type=int, default=StreamSettings().cache_frames)
    p.add_argument("--usable", type=float, default=0.9, help="fraction of the VRAM a stream may plan with")
    p.add_argument("--min-resident", type=float, default=0.15,
                   help="fraction of the weights that stays on the GPU under partial loading")
    p.add_argument("--markdown", action="store_true", help="print the README table")
    args = p.parse_args(argv)
    try:
        config = preset(args.preset)
        settings = StreamSettings(cache_frames=args.cache_frames)
    except ValueError as e:
        sys.stderr.write(f"error: {e}" + "\n")
        return 2
    rows = estimate_rows(config, settings, args.usable, args.min_resident)
    if args.markdown:
        sys.stdout.write(markdown(rows) + "\n")
    else:
        for r in rows:
            fits = " ".join(f"{g}:{v}" for g, v in r["fits"].items())
            sys.stdout.write(f"{r['resolution']:>9} {r['format']:>9} weights {_gb(r['weights'])} GB, stream "
                             f"{_gb(r['stream'])} GB, decode {_gb(r['decode'])} GB | {fits}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
