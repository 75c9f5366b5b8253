"""What the stream options change, measured mechanically: ``python -m chameleon_core.tools.bench_options``.

Random weights and a random "source video" latent, so only mechanics can be measured, not quality: how far the
output moves from the source video as the try-on / motion strength grows (inside and outside a garment mask), how
far condition weighting moves the output from the unweighted stream (student and teacher) as the early bias grows,
and what the keyframe-then-fill schedule costs in chunks against the plain streamed try-on. Metric effects (motion
agreement, garment accuracy) need trained weights and the synthetic fashion world. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import torch

from ..config import StreamSettings, preset
from ..stream_options import ConditionWeighting, SourceVideo
from ..samplers import sample_teacher
from ..stream_options import with_options
from ..streaming import generate, start_stream
from ..random_models import random_transformer
from ..tryon import keyframe_then_fill


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt())


@torch.no_grad()
def run(args: argparse.Namespace) -> str:
    cfg = preset(args.preset)
    if args.layers:
        cfg = replace(cfg, num_layers=args.layers)
    model = random_transformer(cfg, seed=args.seed)
    h, w = cfg.latent.latent_size(args.height, args.width, patch=cfg.patch_size[1:])
    g = torch.Generator().manual_seed(args.seed)
    ref, gar = (torch.randn(1, cfg.in_dim, 1, h, w, generator=g) for _ in range(2))
    ctx = torch.randn(1, min(16, cfg.text_len), cfg.text_dim, generator=g)
    frames = args.chunks * 3
    video = torch.randn(1, cfg.in_dim, frames, h, w, generator=g)
    state = start_stream(model, context=ctx, reference=ref, garment=gar, seed=args.seed, settings=StreamSettings())
    _, plain = generate(state, frames)
    head = f"{cfg.name} ({cfg.num_layers} layers, random weights), latent {h}x{w}, {frames} latent frames, seed {args.seed}"
    out = [head, ""]

    # 1. Source video: distance to the source vs strength, whole frame and inside / outside a half-frame mask.
    mask = torch.zeros(1, 1, 1, h, w)
    mask[..., : h // 2, :] = 1
    out += ["Source video (try-on / motion transfer): latent RMS distance to the source video", "",
            "| strength | step started | no mask | mask: inside | mask: outside |", "|---|---|---|---|---|"]
    for s in (0.0, 0.5, 0.63, 0.83, 0.94, 1.0):
        src = SourceVideo(video, s)
        _, free = generate(with_options(state, source=src), frames)
        _, masked = generate(with_options(state, source=SourceVideo(video, s, mask)), frames)
        step = src.chunk(0, 3, state.timesteps, torch.device("cpu")).start_step
        inside, outside = masked[..., : h // 2, :], masked[..., h // 2 :, :]
        out.append(f"| {s:.2f} | {'copy' if step is None else step} | {_rms(free, video):.3f} | "
                   f"{_rms(inside, video[..., : h // 2, :]):.3f} | {_rms(outside, video[..., h // 2 :, :]):.3f} |")
    out.append(f"| (no source) | - | {_rms(plain, video):.3f} | | |")

    # 2. Condition weighting: how far the output moves from the unweighted stream / teacher.
    out += ["", "Condition weighting (linear ramp early_bias -> 0): latent RMS distance to the unweighted output", "",
            "| early_bias | stream (4 steps) | teacher (8 Euler steps, cfg 1) |", "|---|---|---|"]
    teacher_kw = {"positive": ctx, "negative": None, "reference": ref, "garment": gar, "latent_frames": 3,
                  "steps": 8, "cfg": 1.0, "sampler": "euler", "seed": args.seed}
    teacher_plain = sample_teacher(model, **teacher_kw)
    for b in (0.0, -1.0, -2.0, -4.0, -8.0):
        weighting = ConditionWeighting(b, 0.0)
        _, weighted = generate(with_options(state, condition_weights=weighting), frames)
        teacher = sample_teacher(model, condition_weights=weighting, **teacher_kw)
        out.append(f"| {b:.0f} | {_rms(weighted, plain):.4f} | {_rms(teacher, teacher_plain):.4f} |")

    # 3. Keyframe-then-fill against the plain streamed try-on (same strength, no mask).
    out += ["", "Long try-on: plain stream vs keyframe-then-fill (strength 0.94)", "",
            "| schedule | chunks run | seconds | RMS to source |", "|---|---|---|---|"]
    t0 = time.perf_counter()
    _, streamed = generate(with_options(state, source=SourceVideo(video, 0.94)), frames)
    t1 = time.perf_counter()
    filled, keys = keyframe_then_fill(state, video, segment_chunks=args.segment_chunks, strength=0.94)
    t2 = time.perf_counter()
    out.append(f"| plain stream | {args.chunks} | {t1 - t0:.2f} | {_rms(streamed, video):.3f} |")
    out.append(f"| keyframes ({keys.shape[2] // 3}) + fill, segments of {args.segment_chunks} | "
               f"{args.chunks + keys.shape[2] // 3} | {t2 - t1:.2f} | {_rms(filled, video):.3f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--layers", type=int, default=0)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--chunks", type=int, default=8)
    p.add_argument("--segment-chunks", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.stdout.write(run(args) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
