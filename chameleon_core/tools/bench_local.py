"""Frame-local attention against the full window: ``python -m chameleon_core.tools.bench_local``.

Random weights, no checkpoint. For the full FIFO window and each ``--local`` k, a stream first fills its cache
(``--fill-chunks``, not timed), then the session loop times ``--chunks`` more chunks (backbone: few-step denoising +
clean pass); the table gives the median seconds per chunk, the keys a chunk attends to, the speedup over the full
window and how far the chunk's latents move from the full window's (same seed, same inputs: the quality cost of
the shortcut, in latent RMS). Prints a markdown table; ``--json PATH`` writes the numbers.

Attention is only part of a block (projections and the FFN do not shrink), so the speedup grows with the tokens per
frame and the cache length, and shrinks with the model width; run the shapes you care about. Examples::

    python -m chameleon_core.tools.bench_local --preset tiny --height 1280 --width 704 --local 3 6 12
    python -m chameleon_core.tools.bench_local --preset wan2.2-ti2v-5b --layers 1 --height 512 --width 512 --local 3 9
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import torch

from ..config import COND_FRAMES, StreamSettings, preset
from ..session import Session
from ..stream_options import with_options
from ..streaming import generate, start_stream
from ..random_models import random_transformer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _time_chunks(state, chunks: int) -> tuple[float, float, torch.Tensor]:
    """Median wall seconds per chunk over ``chunks`` chunks of the session loop, the process CPU seconds per chunk
    (steadier than wall time on a shared machine; CPU runs only), and their latents."""
    times, latents = [], []
    cpu0 = time.process_time()
    for chunk in Session(state, chunks=chunks, decode=False):
        times.append(chunk.backbone_seconds)
        latents.append(chunk.latents)
    return statistics.median(times), (time.process_time() - cpu0) / chunks, torch.cat(latents, dim=2)


@torch.no_grad()
def run(args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    cfg = preset(args.preset)
    if args.layers:
        cfg = replace(cfg, num_layers=args.layers, name=f"{cfg.name}[{args.layers} layers]")
    settings = StreamSettings(chunk_frames=args.chunk_frames, cache_frames=args.cache_frames)
    h, w = cfg.latent.latent_size(args.height, args.width, patch=cfg.patch_size[1:])
    tpf = cfg.tokens_per_latent_grid(h, w)
    model = random_transformer(cfg, device=device, dtype=dtype, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed)
    ref, gar = (torch.randn(1, cfg.in_dim, 1, h, w, generator=g).to(device) for _ in range(2))
    context = torch.randn(1, min(16, cfg.text_len), cfg.text_dim, generator=g).to(device, dtype)
    start = start_stream(model, context=context, reference=ref, garment=gar, seed=args.seed, settings=settings)
    filled, _ = generate(start, args.fill_chunks * args.chunk_frames)  # the window is full from here on
    window = settings.cache_frames - COND_FRAMES - settings.sink_frames
    rows, full_latents = [], None
    for k in [None, *args.local]:
        state = with_options(filled, local_frames=k)
        _time_chunks(state, 1)  # warm-up (allocator, kernel choice)
        seconds, cpu_seconds, latents = _time_chunks(state, args.chunks)
        cost = cpu_seconds if device.type == "cpu" else seconds
        # Keys a chunk attends to: conditions + sink + the k frames before it (or the whole window) incl. itself.
        history = window - args.chunk_frames if k is None else min(k, window - args.chunk_frames)
        keys = (COND_FRAMES + settings.sink_frames + history + args.chunk_frames) * tpf
        if k is None:
            full_cost, full_latents = cost, latents
        rows.append({
            "local_frames": k, "keys": keys, "seconds_per_chunk": seconds, "cpu_seconds_per_chunk": cpu_seconds,
            "speedup": full_cost / cost,
            "latent_rms_vs_full": float((latents - full_latents).pow(2).mean().sqrt()),
        })
    return {
        "config": cfg.name, "resolution": [args.height, args.width], "tokens_per_frame": tpf,
        "cache_frames": settings.cache_frames, "chunk_frames": args.chunk_frames, "device": str(device),
        "dtype": args.dtype, "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}", "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    head = (f"{result['config']} at {result['resolution'][0]}x{result['resolution'][1]} "
            f"({result['tokens_per_frame']} tokens/frame), cache {result['cache_frames']} frames, chunk "
            f"{result['chunk_frames']}, {result['device']} {result['dtype']} ({result['machine']})")
    lines = [head, "", "| attention | keys per query | wall s / chunk | CPU s / chunk | speedup | latent RMS vs full |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        name = "full window" if r["local_frames"] is None else f"local k={r['local_frames']}"
        lines.append(f"| {name} | {r['keys']} | {r['seconds_per_chunk']:.3f} | {r['cpu_seconds_per_chunk']:.3f} | "
                     f"{r['speedup']:.2f}x | {r['latent_rms_vs_full']:.4f} |")
    lines.append("")
    lines.append("speedup: full window / local, on process CPU time for CPU runs (wall time on accelerators)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--layers", type=int, default=0, help="keep only this many blocks (a real-width slice)")
    p.add_argument("--height", type=int, default=1280)
    p.add_argument("--width", type=int, default=704)
    p.add_argument("--chunk-frames", type=int, default=3)
    p.add_argument("--cache-frames", type=int, default=23)
    p.add_argument("--local", type=int, nargs="+", default=[3, 6, 12], help="k values (latent frames of history)")
    p.add_argument("--fill-chunks", type=int, default=7, help="chunks generated first so the window is full")
    p.add_argument("--chunks", type=int, default=3, help="chunks timed per setting")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 gives the "
                   "steadiest CPU times on a shared machine")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if any(k < 1 for k in args.local):
        p.error(f"--local values must be >= 1 (latent frames of history), got {args.local}")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    sys.stdout.write(table(result) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
