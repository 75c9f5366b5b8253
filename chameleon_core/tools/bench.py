"""Streaming benchmark with random weights: ``python -m chameleon_core.tools.bench``.

Runs any preset (or a "real-shaped slice" of one with ``--layers``) at any resolution, no checkpoint needed, and
reports:

- time per chunk against chunk index (backbone: few-step denoising + clean pass);
- backbone FPS and end-to-end FPS including streaming VAE decode (pixel frames per second; a chunk of 3 latent
  frames is 12 video frames, the first chunk 9);
- peak memory, and the KV-cache size;
- the speedup of cached streaming over recomputing the whole context (every earlier frame) each chunk, at several
  stream lengths -- a cache-less causal model has to re-run its context, so this ratio grows with length.

Writes JSON with ``--json``. Examples::

    python -m chameleon_core.tools.bench --preset tiny --height 256 --width 256 --latent-frames 120
    python -m chameleon_core.tools.bench --preset wan2.2-ti2v-5b --layers 2 --height 256 --width 256 --latent-frames 120
    python -m chameleon_core.tools.bench --preset wan2.2-ti2v-5b --height 1280 --width 704 --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import statistics
import sys
import time
from dataclasses import replace
from typing import Any

import torch

from ..attention import FullAttention, frame_block_mask
from ..config import StreamSettings, preset
from ..model import WanModel
from ..session import Session
from ..streaming import generate, start_stream
from ..testing import random_transformer

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> dict[str, float]:
    out = {"host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["device_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


@torch.no_grad()
def recompute_chunk_time(
    model: WanModel, context: torch.Tensor, prior_frames: int, chunk: int, h: int, w: int, steps: int, repeats: int
) -> float:
    """Seconds to produce one chunk *without* a KV cache: every denoising step and the clean pass re-run a full
    forward over ``[conditions, prior_frames clean frames, the chunk]`` under the block-causal mask."""
    cfg, device = model.config, model.device
    text = model.prepare_text(context)
    n_video = prior_frames + chunk
    x = torch.randn(1, cfg.in_dim, 2 + n_video, h, w, device=device)
    tpf = cfg.tokens_per_latent_grid(h, w)
    mask = FullAttention(frame_block_mask(2, n_video, chunk, tpf, device=device))
    frame_t = torch.zeros(1, 2 + n_video, device=device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps + 1):
            model.forward_frames(x, frame_t, 0, text, mask)
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    cfg = preset(args.preset)
    if args.layers:
        cfg = replace(cfg, num_layers=args.layers, name=f"{cfg.name}[{args.layers} layers]")
    settings = StreamSettings(chunk_frames=args.chunk_frames, cache_frames=args.cache_frames, steps=args.steps)
    fam = cfg.latent
    h, w = fam.latent_size(args.height, args.width, patch=cfg.patch_size[1:])
    model = random_transformer(cfg, device=device, dtype=dtype, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed)
    cond = [torch.randn(1, cfg.in_dim, 1, h, w, generator=g).to(device) for _ in range(2)]
    context = torch.randn(1, min(64, cfg.text_len), cfg.text_dim, generator=g).to(device, dtype)

    vae = None
    if args.vae != "none":
        from ..vae import build_vae, check_vae_matches

        vae = build_vae(args.vae, device=str(device), dtype=dtype, seed=args.seed)
        check_vae_matches(vae, cfg.in_dim)

    state = start_stream(model, context=context, reference=cond[0], garment=cond[1], seed=args.seed,
                         settings=settings)
    # Warm-up chunk (kernel selection, allocator), not counted.
    generate(state, args.chunk_frames)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # The session loop every job runs: each chunk generated, then decoded at once (when a VAE is given).
    chunks = -(-args.latent_frames // args.chunk_frames)
    session = Session(state, chunks=chunks, codec=vae, decode=vae is not None)
    _sync(device)
    wall0 = time.perf_counter()
    chunk_times: list[float] = []
    decode_times: list[float] = []
    for chunk in session:
        chunk_times.append(chunk.backbone_seconds)
        if vae is not None:
            decode_times.append(chunk.decode_seconds)
    _sync(device)
    wall = time.perf_counter() - wall0
    state = session.state
    latents = state.latents()

    n_lat = latents.shape[2]
    pixel_frames = fam.pixel_frames(n_lat)
    backbone_s = sum(chunk_times)
    decode_s = sum(decode_times)

    def at(i: int) -> float | None:
        return chunk_times[i] if i < len(chunk_times) else None

    lengths = sorted({k for k in args.recompute_at if k * args.chunk_frames + args.chunk_frames <= n_lat})
    recompute = []
    for k in lengths:
        t_re = recompute_chunk_time(model, context, k * args.chunk_frames, args.chunk_frames, h, w, len(state.timesteps),
                                    args.repeats)
        recompute.append({"chunk_index": k, "prior_frames": k * args.chunk_frames, "recompute_s": t_re,
                          "cached_s": chunk_times[k], "speedup": t_re / chunk_times[k]})

    result = {
        "config": {
            "preset": cfg.name, "dim": cfg.dim, "layers": cfg.num_layers, "height": args.height, "width": args.width,
            "latent_grid": [h, w], "tokens_per_frame": state.geometry.tokens_per_frame, "chunk_frames": args.chunk_frames,
            "cache_frames": args.cache_frames, "steps": len(state.timesteps), "dtype": args.dtype,
            "vae": args.vae, "latent_frames": n_lat, "pixel_frames": pixel_frames,
        },
        "machine": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
            or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
        },
        "chunk_seconds": chunk_times,
        "decode_seconds": decode_times,
        # Medians of 5 chunks around index 5 and 40: single CPU timings are noisy.
        "chunk40_over_chunk5": (
            statistics.median(chunk_times[38:43]) / statistics.median(chunk_times[3:8]) if at(42) else None
        ),
        "last10_over_first10_after_warmup": (
            statistics.mean(chunk_times[-10:]) / statistics.mean(chunk_times[2:12]) if len(chunk_times) >= 22 else None
        ),
        "backbone_fps": pixel_frames / backbone_s,
        "end_to_end_fps": pixel_frames / (backbone_s + decode_s) if vae is not None else None,
        "wall_seconds": wall,
        "cache_mb": state.cache.nbytes / 2**20,
        "memory": _peak_memory(device),
        "recompute_vs_cached": recompute,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chameleon_core.tools.bench", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", help="model preset (tiny, wan2.1-t2v-1.3b, wan2.2-ti2v-5b, ...)")
    p.add_argument("--layers", type=int, default=0, help="keep only N blocks: a real-shaped slice of the preset")
    p.add_argument("--height", type=int, default=256, help="pixel height, a multiple of 32 (Wan2.2) / 16 (Wan2.1)")
    p.add_argument("--width", type=int, default=256, help="pixel width, a multiple of 32 (Wan2.2) / 16 (Wan2.1)")
    p.add_argument("--latent-frames", type=int, default=129, help="latent frames to stream (4 video frames each)")
    p.add_argument("--chunk-frames", type=int, default=3, help="latent frames per chunk")
    p.add_argument("--cache-frames", type=int, default=23, help="cache length in latent frames (2 cond + sink + window)")
    p.add_argument("--steps", type=int, default=4, help="denoising steps per chunk")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--vae", default="none", help="VAE preset for end-to-end FPS (wan2.2, wan2.2-tiny, ...) or none")
    p.add_argument("--recompute-at", type=int, nargs="*", default=[5, 10, 20, 40],
                   help="chunk indices at which to time the no-cache recompute baseline")
    p.add_argument("--repeats", type=int, default=1, help="repeats of each recompute timing (min is kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the full result here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    summary = {k: result[k] for k in ("backbone_fps", "end_to_end_fps", "chunk40_over_chunk5",
                                      "last10_over_first10_after_warmup", "cache_mb", "memory")}
    summary["recompute_speedup"] = {r["chunk_index"]: round(r["speedup"], 2) for r in result["recompute_vs_cached"]}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
