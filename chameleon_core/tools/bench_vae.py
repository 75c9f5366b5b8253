"""Benchmark of streaming VAE decode: time and peak memory per chunk, random weights, no checkpoint needed.

    python -m chameleon_core.tools.bench_vae --family wan2.2 --height 256 --width 256 --latent-frames 12 --chunk-frames 3 \
        [--tiny] [--device cpu] [--dtype fp32] [--json out.json]

Decodes ``--latent-frames`` random raw latents in chunks of ``--chunk`` latent frames with
:meth:`chameleon_core.vae.WanVAE.decode_chunk`, as the streaming sampler's output would be shown, and drops each
chunk's pixels after timing it. Peak memory is measured per chunk: on CUDA with the allocator's peak counter, on CPU
as the process's peak resident set size (Linux ``VmHWM``, reset before each chunk through ``/proc/self/clear_refs``).
A streaming decoder should show the same peak for every chunk, whatever the video length.

``--device meta`` runs the shapes only (no weights, no arithmetic): it reports the exact size of the carried state
and of each chunk's pixels at any resolution (for example 1280x704) in seconds; its times and peaks mean nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ..decoding import StreamingDecoder
from ..vae import build_vae

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIB = 1024 * 1024


def _proc_status(field: str) -> int | None:
    """A ``/proc/self/status`` memory field in bytes (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


class _Memory:
    """Per-chunk peak memory on the device the VAE runs on."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.meta = device.type == "meta"
        self.kind = "cuda max_memory_allocated" if self.cuda else "process peak RSS (VmHWM)"
        if self.meta:
            self.kind = "none (meta device: shapes only)"

    def current(self) -> int:
        if self.meta:
            return 0
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        return _proc_status("VmRSS") or 0

    def reset(self) -> None:
        if self.meta:
            return
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not _reset_cpu_peak():
            self.kind = "process peak RSS since start (could not reset /proc/self/clear_refs)"

    def peak(self) -> int:
        if self.meta:
            return 0
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        return _proc_status("VmHWM") or 0


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    preset = args.family + ("-tiny" if args.tiny else "")
    if args.threads:
        torch.set_num_threads(args.threads)
    mem = _Memory(device)

    before_weights = mem.current()
    vae = build_vae(preset, device=device, dtype=dtype, seed=args.seed)
    weights = sum(p.numel() * p.element_size() for p in vae.model.parameters())
    h, w = vae.latent_size(args.height, args.width)
    generator = torch.Generator().manual_seed(args.seed)
    latents = torch.randn(1, vae.config.z_dim, args.latent_frames, h, w, generator=generator)
    latents = latents.to(device=device, dtype=dtype)
    baseline = mem.current()

    chunks = []
    decoder = StreamingDecoder(vae)  # the one streaming-decode entry point (raw latents in)
    for index, start in enumerate(range(0, args.latent_frames, args.chunk_frames)):
        piece = latents[:, :, start : start + args.chunk_frames]
        mem.reset()
        before = mem.current()
        t0 = time.perf_counter()
        # The decoder consumes the old state: its caches are freed as the new ones are written.
        frames = decoder.decode(piece)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        peak = mem.peak()
        chunks.append(
            {
                "chunk": index,
                "latent_frames": piece.shape[2],
                "pixel_frames": frames.shape[2],
                "seconds": round(seconds, 4),
                "seconds_per_pixel_frame": round(seconds / frames.shape[2], 4),
                "peak_mib": round(peak / MIB, 1),
                "peak_above_start_of_chunk_mib": round((peak - before) / MIB, 1),
                "output_mib": round(frames.numel() * frames.element_size() / MIB, 1),
                "state_mib": round(decoder.state_nbytes / MIB, 2),
            }
        )
        cost = (
            f"shapes only, pixels {chunks[-1]['output_mib']:.1f} MiB"
            if mem.meta
            else f"in {seconds:.2f}s ({seconds / frames.shape[2]:.3f}s/frame), peak {peak / MIB:.0f} MiB "
            f"(+{(peak - before) / MIB:.0f} MiB during the chunk)"
        )
        print(
            f"chunk {index}: {piece.shape[2]} latent -> {frames.shape[2]} pixel frames {cost}, "
            f"state {decoder.state_nbytes / MIB:.2f} MiB",
            flush=True,
        )
        del frames
    total = sum(c["seconds"] for c in chunks)
    steady = chunks[1:] or chunks
    result = {
        "command": " ".join([Path(sys.executable).name, "-m", "chameleon_core.tools.bench_vae", *sys.argv[1:]]),
        "family": args.family,
        "preset": preset,
        "config": repr(vae.config),
        "height": args.height,
        "width": args.width,
        "latent_grid": [h, w],
        "latent_frames": args.latent_frames,
        "chunk": args.chunk_frames,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "memory_measure": mem.kind,
        "weights_mib": round(weights / MIB, 1),
        "memory_before_weights_mib": round(before_weights / MIB, 1),
        "memory_after_weights_and_latents_mib": round(baseline / MIB, 1),
        "max_chunk_peak_mib": max(c["peak_mib"] for c in chunks),
        "total_seconds": round(total, 3),
        "pixel_frames": sum(c["pixel_frames"] for c in chunks),
        "fps": round(sum(c["pixel_frames"] for c in chunks) / total, 3),
        "steady_seconds_per_chunk": round(sum(c["seconds"] for c in steady) / len(steady), 3),
        "chunks": chunks,
    }
    head = (
        f"{preset} {args.width}x{args.height} (WxH; latent {w}x{h}), {args.latent_frames} latent frames in chunks of "
        f"{args.chunk_frames}, {args.dtype} on {device}"
    )
    if mem.meta:
        for key in ("total_seconds", "fps", "steady_seconds_per_chunk", "max_chunk_peak_mib"):
            result[key] = None
        print(f"{head}: shapes only; state {decoder.state_nbytes / MIB:.0f} MiB, weights {weights / MIB:.0f} MiB", flush=True)
    else:
        print(
            f"{head} ({torch.get_num_threads()} threads): {total:.1f}s, {result['fps']:.2f} frames/s, steady "
            f"{result['steady_seconds_per_chunk']:.2f}s/chunk, max peak {result['max_chunk_peak_mib']:.0f} MiB "
            f"({mem.kind}); weights {weights / MIB:.0f} MiB",
            flush=True,
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=["wan2.1", "wan2.2"], default="wan2.2")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--latent-frames", type=int, default=12)
    parser.add_argument("--chunk-frames", type=int, default=3, help="latent frames per decode_chunk call")
    parser.add_argument("--tiny", action="store_true", help="tiny widths (test config) instead of the released ones")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.latent_frames < 1 or args.chunk_frames < 1:
        parser.error(f"--latent-frames and --chunk-frames must be >= 1, got {args.latent_frames} and {args.chunk_frames}")
    try:
        result = run(args)
    except ValueError as e:  # e.g. a resolution that is not a multiple of the VAE's stride
        parser.error(str(e))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
