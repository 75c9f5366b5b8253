"""Memory of a long stream: host RSS and the stream state's held latents over an hour-equivalent stream.

``python -m chameleon_core.tools.bench_memory --hour`` runs the session loop (generate -> streaming decode, as the
command line does) for one hour of 24 FPS video (86 400 frames = 7 200 chunks of 3 latent frames) with the random
``tiny`` transformer and VAE at 64x64, samples the process RSS and the latents the stream state holds, and prints a
table; ``--keep-history`` shows the growth the old behaviour had. The faithful part is the model of the state's
history at 1280x704 (``[1, 48, 3, 80, 44]`` fp32 per chunk), printed beside it. ``--mp4 FILE`` also writes every
frame to an mp4 through :class:`~chameleon_core.tools.video_files.Mp4File`, to see which side grows with mp4 output;
``--mp4-only N`` measures the writer alone (N frames at ``--size``), with PyAV's own encode loop as the control.

The write-up with the numbers is ``docs/benchmarks/memory.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import StreamSettings, preset
from ..session import Session, encode_condition
from ..streaming import StreamState, start_stream
from ..random_models import random_transformer
from ..vae import build_vae

logger = logging.getLogger(__name__)

FPS = 24
CHUNK_FRAMES = 3
FULL_CHUNK_BYTES = 48 * CHUNK_FRAMES * 80 * 44 * 4
"""Host bytes of one chunk's clean latents at 1280x704 (Wan2.2: 48 channels, 80x44 latent grid, fp32)."""


def rss_mib() -> float:
    """Resident set of this process now (``VmRSS``), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def held(state: StreamState) -> tuple[int, int]:
    """(chunks, bytes) of clean latents the stream state holds on the host."""
    return len(state.history), sum(t.numel() * t.element_size() for t in state.history)


def run_stream(chunks: int, keep_history: bool, size: int, samples: int, mp4: Path | None) -> list[dict]:
    torch.set_num_threads(1)
    config = preset("tiny")
    model = random_transformer(config, seed=0)
    vae = build_vae("wan2.2-tiny", seed=0)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, size, size, 3, generator=g)
    ref = encode_condition(vae, config.latent, image, garment=False, size=(size, size))
    gar = encode_condition(vae, config.latent, image.flip(2), garment=True, size=(size, size))
    ctx = torch.randn(1, 8, config.text_dim, generator=g)
    settings = StreamSettings(chunk_frames=CHUNK_FRAMES, steps=1, keep_history=keep_history)
    state = start_stream(model, context=ctx, reference=ref, garment=gar, seed=0, settings=settings)
    writer = None
    if mp4 is not None:
        from .video_files import Mp4File

        writer = Mp4File(mp4, FPS, size, size)
    every = max(1, chunks // samples)
    rows: list[dict] = []
    session = Session(state, chunks=chunks, codec=vae)
    t0 = time.perf_counter()
    frames = 0
    for chunk in session:
        frames += chunk.pixels.shape[2]
        if writer is not None:
            from .video_files import to_uint8_frames

            writer.write(to_uint8_frames(chunk.pixels))
        if chunk.index % every == 0 or chunk.index == chunks - 1:
            n, nbytes = held(session.state)  # closes the running segment: one cache copy per sample
            rows.append({"chunk": chunk.index + 1, "video_frames": frames, "minutes": frames / FPS / 60,
                         "rss_mib": rss_mib(), "held_chunks": n, "held_mib": nbytes / 2**20,
                         "model_1280x704_mib": n * FULL_CHUNK_BYTES / 2**20,
                         "seconds": time.perf_counter() - t0})  # fmt: skip
            logger.info("%s", rows[-1])
    if writer is not None:
        writer.close()
    return rows


def run_mp4_only(frames: int, size: int, samples: int, path: Path) -> dict[str, list[dict]]:
    """RSS while writing ``frames`` frames: through our Mp4File, and through PyAV's encode loop alone (control)."""
    import av

    from .video_files import Mp4File

    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(16)]
    every = max(1, frames // samples)
    out: dict[str, list[dict]] = {}

    writer = Mp4File(path, FPS, size, size)
    rows = []
    for i in range(frames):
        writer.write(pool[i % 16][None])
        if i % every == 0 or i == frames - 1:
            rows.append({"frame": i + 1, "rss_mib": rss_mib()})
    writer.close()
    out["ours (Mp4File)"] = rows

    container = av.open(str(path.with_suffix(".control.mp4")), mode="w")
    stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
    rows = []
    for i in range(frames):
        for packet in stream.encode(av.VideoFrame.from_ndarray(pool[i % 16], format="rgb24")):
            container.mux(packet)
        if i % every == 0 or i == frames - 1:
            rows.append({"frame": i + 1, "rss_mib": rss_mib()})
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    out["PyAV alone"] = rows
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chameleon_core.tools.bench_memory", description=__doc__.split("\n")[0])
    p.add_argument("--hour", action="store_true", help="stream one hour of 24 FPS video (7200 chunks)")
    p.add_argument("--chunks", type=int, default=300, help="chunks to stream without --hour (300)")
    p.add_argument("--keep-history", action="store_true", help="keep every chunk in the state (the graph's mode)")
    p.add_argument("--size", type=int, default=64, help="video width and height in pixels (64)")
    p.add_argument("--samples", type=int, default=12, help="rows in the table (12)")
    p.add_argument("--mp4", type=Path, help="also write the stream to this mp4")
    p.add_argument("--mp4-only", type=int, metavar="FRAMES", help="measure the mp4 writer alone for FRAMES frames")
    p.add_argument("--json", type=Path, help="write the rows here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.mp4_only:
        result = run_mp4_only(args.mp4_only, args.size, args.samples, args.mp4 or Path("bench_memory.mp4"))
        for name, rows in result.items():
            print(f"{name}: " + ", ".join(f"{r['frame']}: {r['rss_mib']:.1f}" for r in rows))
    else:
        chunks = 3600 * FPS // (4 * CHUNK_FRAMES) if args.hour else args.chunks
        result = run_stream(chunks, args.keep_history, args.size, args.samples, args.mp4)
        print(f"{'chunk':>6} {'minutes':>8} {'RSS MiB':>8} {'held chunks':>11} {'held MiB':>9} "
              f"{'at 1280x704 MiB':>16} {'s':>7}")
        for r in result:
            print(f"{r['chunk']:>6} {r['minutes']:>8.1f} {r['rss_mib']:>8.1f} {r['held_chunks']:>11} "
                  f"{r['held_mib']:>9.3f} {r['model_1280x704_mib']:>16.1f} {r['seconds']:>7.0f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
