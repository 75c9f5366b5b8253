"""Per-GPU memory, step time and GPU-hours of the 5B training stages by GPU count: an ESTIMATE (nothing is
allocated or measured here), calibrated on the one measured point.

``python -m chameleon_core.training.estimate [--gpus 1,2,4,8] [--global-batch 64] [--markdown]`` prints, for SFT,
teacher forcing and GR-DMD (generator + critic trained, frozen teacher, EMA copy; optionally the teacher offloaded
to host memory), per-GPU peak memory, seconds per optimiser step at the global batch, and GPU-hours per stage at the
paper's step counts, and whether that fits an 80 GB or a 141 GB GPU (at most 90 % of it). The trainer's layout is what is modelled: FSDP2 full sharding (fp32 master weights, gradients
and AdamW state sharded; bf16 compute), per-block activation checkpointing, one sample per micro-batch, and
gradient accumulation over ``global batch / GPUs`` micro-batches with gradient sync on the last one only.

**Calibration (the only measurement; H200, bf16, 5B, 81 frames, 704x1280, batch 1, checkpointing):** SFT
3.99 s/step and 82.4 GiB peak (CUDA allocator). Time: every stage's step is its FLOPs divided by the throughput of
that measurement (SFT FLOPs / 3.99 s, ~34 % of the H200's dense bf16 peak); memory: the analytic terms below plus
the measurement's residual. Everything else is an estimate.

Memory terms (bytes; P parameters of a model, R of them in FSDP's root unit, N GPUs, T tokens of a micro-batch):

- sharded state: ``16 P / N`` per trained model (fp32 weights, gradients, AdamW m and v), ``4 P / N`` per frozen
  fp32 model (teacher, EMA; 0 with the teacher offloaded, FSDP2's ``CPUOffloadPolicy``);
- gradient accumulation: FSDP2 keeps the unsharded gradients of the trained model in fp32 across micro-batches
  whose sync is off (``4 P``, not divided by N) whenever a GPU runs more than one micro-batch per step;
- root unit: the root's weights stay gathered in bf16 for the whole step, with their bf16 gradients (``4 R``; the
  root holds the embeddings, head, cross-attention and modulation, ~1.2 B of 5 B, see :mod:`.parallel`);
- activations: the checkpointed input of every block, ``layers x dim x 2`` bytes per token (the per-block recompute
  working set is transient);
- GR-DMD also holds the rollout's KV cache (``layers x 2 x dim x 2`` bytes per cached token), the frozen models'
  gathered roots while they run, the reward's VAE and CLIP weights, and the decoded video.

FLOPs per forward of ``q`` query tokens over ``k`` keys: ``2 q`` times the block linear weights (text K/V aside), plus
attention ``4 q k dim`` per layer (teacher forcing: times the share of its block mask that FlexAttention computes),
plus cross-attention over the 512 text tokens. A trained forward costs 4 forwards (forward, recompute, backward).
GR-DMD per iteration: a no-gradient rollout and a critic step every iteration; every ``critic_per_generator``-th
(5), the rollout with gradient at its exit step, two teacher forwards (CFG), a critic forward, the VAE decode of the
rollout (FLOPs counted by torch's FlopCounterMode on the meta device) and CLIP ViT-L/14 on every frame.

Communication is not in the times: per micro-batch FSDP moves about ``8 P (N - 1) / N`` bytes (two bf16 all-gathers
of the units, one fp32 reduce-scatter on the last micro-batch), ~0.1 s over NVLink against ~4 s of compute, and it
overlaps the compute.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from chameleon_core.config import COND_FRAMES, WanConfig, preset
from chameleon_core.frames import is_whole_video
from chameleon_core.frames import latent_frames as latent_frames_of

GIB = 2**30
GPU_BYTES = {"80 GB": 80e9, "141 GB": 141e9}
"""H100 / A100 80 GB and H200 141 GB (decimal gigabytes, as sold)."""
USABLE = 0.9
"""Share of a GPU's memory the allocator's peak may reach (CUDA context, fragmentation)."""


@dataclass(frozen=True)
class Calibration:
    """The measured point the estimate is calibrated on."""

    seconds_per_step: float = 3.99
    peak_gib: float = 82.4
    device: str = "H200 (141 GB)"
    what: str = "SFT, 1 GPU, 5B, 81 frames, 704x1280, batch 1, bf16, activation checkpointing"


CALIBRATION = Calibration()
PAPER_STEPS = {"sft": (2300, 5000), "forcing": (4000, 4000), "dmd": (2000, 3000)}
"""Optimiser steps per stage (GR-DMD: iterations; 400-600 generator updates at 5 critic updates each)."""
CLIP_PARAMS = 304e6
"""CLIP ViT-L/14 image tower (the aesthetic reward), 257 tokens per 224x224 frame."""
CLIP_TOKENS = 257
VAE_WEIGHTS_BYTES = int(1.41e9)
"""The Wan2.2 VAE in bf16 (705 M parameters), kept on the GPU for the reward."""


@dataclass(frozen=True)
class Geometry:
    """What one sample is: latent frames, tokens per latent frame, the chunking of the causal stages."""

    frames: int = 81
    width: int = 704
    height: int = 1280
    chunk_frames: int = 3
    denoise_steps: int = 4
    critic_per_generator: int = 5

    def latent_frames(self) -> int:
        return latent_frames_of(self.frames)

    def tokens_per_frame(self, config: WanConfig) -> int:
        return config.tokens_per_frame(self.height, self.width)

    def latent_size(self, config: WanConfig) -> tuple[int, int]:
        return config.latent.latent_size(self.height, self.width)


# -------------------------------------------------------------------------------------------------------------------
# Counting
# -------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def param_counts(config: WanConfig) -> tuple[int, int]:
    """(all parameters, those in FSDP's root unit: everything but each block's self-attention and two FFN linears)."""
    from chameleon_core.model import WanModel

    with torch.device("meta"):
        model = WanModel(config)
    total = sum(p.numel() for p in model.parameters())
    units = sum(p.numel() for b in model.blocks for u in (b.self_attn, b.ffn[0], b.ffn[2]) for p in u.parameters())
    return total, total - units


def dit_forward_flops(config: WanConfig, q: int, k: int, *, attention_share: float = 1.0) -> float:
    """FLOPs of one DiT forward: ``q`` query tokens over ``k`` self-attention keys, cross-attention over
    ``config.text_len`` text tokens (whose K/V projections are counted once)."""
    d, f, layers = config.dim, config.ffn_dim, config.num_layers
    per_token = 2 * (4 * d * d + 2 * d * d + 2 * d * f)  # self-attn q k v o, cross-attn q o, FFN
    text_kv = 2 * config.text_len * 2 * d * d  # cross-attn k v on the prompt
    attention = 4 * q * k * d * attention_share + 4 * q * config.text_len * d
    return float(layers * (q * per_token + text_kv + attention))


def forcing_attention_share(geometry: Geometry) -> float:
    """Share of the teacher-forcing sequence's (query, key) pairs its block mask keeps (frame-level)."""
    from .forcing_mask import forcing_frame_mask

    return float(forcing_frame_mask(geometry.latent_frames(), geometry.chunk_frames).float().mean())


@functools.lru_cache(maxsize=4)
def _vae_decode_counts(family: str) -> tuple[float, float]:
    """(FLOPs of the first latent frame, of each further one) per latent pixel, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from chameleon_core.vae import build_vae

    vae = build_vae(family, device="meta", seed=None)
    counts = []
    for frames in (1, 2):
        with FlopCounterMode(display=False) as fc:
            vae.decode(torch.zeros(1, vae.config.z_dim, frames, 4, 4, device="meta"))
        counts.append(fc.get_total_flops() / 16)
    return counts[0], counts[1] - counts[0]


def vae_decode_flops(latent_frames: int, latent_h: int, latent_w: int, family: str = "wan2.2") -> float:
    first, each = _vae_decode_counts(family)
    return (first + each * (latent_frames - 1)) * latent_h * latent_w


def stage_flops(stage: str, config: WanConfig, g: Geometry) -> dict[str, float]:
    """FLOPs of one sample's work per optimiser step (GR-DMD: per iteration, generator updates averaged in)."""
    tpf = g.tokens_per_frame(config)
    full = (COND_FRAMES + g.latent_frames()) * tpf
    if stage == "sft":
        return {"train": 4 * dit_forward_flops(config, full, full)}
    if stage == "forcing":
        seq = 2 * full
        return {"train": 4 * dit_forward_flops(config, seq, seq, attention_share=forcing_attention_share(g))}
    if stage != "dmd":
        raise ValueError(f"stage must be sft, forcing or dmd, got {stage!r}")
    chunks, c = g.latent_frames() // g.chunk_frames, g.chunk_frames
    chunk_fwd = [dit_forward_flops(config, c * tpf, (COND_FRAMES + c * (k + 1)) * tpf) for k in range(chunks)]
    per_chunk_passes = (g.denoise_steps - 1) / 2 + 1 + 1  # steps up to a uniform exit step, then the clean pass
    rollout = per_chunk_passes * sum(chunk_fwd)
    fwd = dit_forward_flops(config, full, full)
    lh, lw = g.latent_size(config)
    reward = vae_decode_flops(g.latent_frames(), lh, lw) + g.frames * 2 * CLIP_PARAMS * CLIP_TOKENS
    generator = rollout + 3 * sum(chunk_fwd) + 3 * fwd + reward  # + exit steps' recompute and backward, teacher x2,
    critic = rollout + 4 * fwd  # critic forward; the critic: a fresh rollout, then a trained forward
    return {"critic": critic, "generator": generator, "train": critic + generator / g.critic_per_generator,
            "reward": reward}


def stage_memory(stage: str, config: WanConfig, g: Geometry, gpus: int, micro_batches: int, *,
                 offload_teacher: bool = False, residual: float = 0.0) -> dict[str, float]:
    """Per-GPU peak bytes of a stage, by term (see the module docstring); ``residual`` is the calibration's."""
    p, root = param_counts(config)
    tpf = g.tokens_per_frame(config)
    full = (COND_FRAMES + g.latent_frames()) * tpf
    saved_per_token = config.num_layers * config.dim * 2
    accumulation = 4 * p if micro_batches > 1 else 0
    if stage in ("sft", "forcing"):
        tokens = full if stage == "sft" else 2 * full
        return {"sharded": 16 * p / gpus, "accumulation": accumulation, "root": 4 * root,
                "activations": saved_per_token * tokens, "residual": residual}
    if stage != "dmd":
        raise ValueError(f"stage must be sft, forcing or dmd, got {stage!r}")
    frozen = (0 if offload_teacher else 4 * p / gpus) + 4 * p / gpus  # teacher, EMA
    kv = config.num_layers * 2 * config.dim * 2 * full  # the whole rollout's cache, bf16
    lh, lw = g.latent_size(config)
    from chameleon_core.memory import vae_decode_bytes
    from chameleon_core.vae import VAE_PRESETS

    decode = vae_decode_bytes(VAE_PRESETS["wan2.2"], lh, lw, 1, torch.bfloat16) + 4 * 3 * g.frames * g.width * g.height
    reward_weights = VAE_WEIGHTS_BYTES + 4 * CLIP_PARAMS
    # Generator update (the peak): its root with gradients, the teacher's and critic's roots while they run, the
    # rollout's cache and exit-step inputs, the reward's decode.
    generator_phase = 4 * root + 2 * 2 * root + kv + saved_per_token * g.latent_frames() * tpf + decode
    critic_phase = 4 * root + saved_per_token * full
    return {"sharded": 2 * 16 * p / gpus + frozen, "accumulation": accumulation, "reward_models": reward_weights,
            "activations": max(generator_phase, critic_phase), "residual": residual}


# -------------------------------------------------------------------------------------------------------------------
# Calibration and rows
# -------------------------------------------------------------------------------------------------------------------


def calibrate(config: WanConfig, g: Geometry, cal: Calibration = CALIBRATION) -> tuple[float, float]:
    """(FLOP/s of the measured SFT step, memory residual in bytes: measured peak minus the analytic terms)."""
    rate = stage_flops("sft", config, g)["train"] / cal.seconds_per_step
    modelled = sum(stage_memory("sft", config, g, 1, 1).values())
    return rate, cal.peak_gib * GIB - modelled


def estimate_rows(config: WanConfig, g: Geometry, gpus: Sequence[int], global_batch: int = 64) -> list[dict]:
    """One row per (stage, GPU count[, teacher offload]) at ``global_batch`` with one sample per micro-batch."""
    rate, residual = calibrate(config, g)
    rows = []
    for stage in ("sft", "forcing", "dmd"):
        flops = stage_flops(stage, config, g)["train"]
        for n in gpus:
            if global_batch % n:
                raise ValueError(f"--global-batch {global_batch} is not divisible by {n} GPUs")
            micro = global_batch // n
            seconds = micro * flops / rate
            for offload in ((False, True) if stage == "dmd" else (False,)):
                mem = stage_memory(stage, config, g, n, micro, offload_teacher=offload, residual=residual)
                lo, hi = PAPER_STEPS[stage]
                total = sum(mem.values())
                rows.append({"stage": stage + (" (teacher offloaded)" if offload else ""), "gpus": n,
                             "micro_batches": micro, "memory_gib": total / GIB,
                             "fits": {name: total <= USABLE * size for name, size in GPU_BYTES.items()},
                             "memory_terms_gib": {k: v / GIB for k, v in mem.items()},
                             "seconds_per_step": seconds, "samples_per_second": global_batch / seconds,
                             "gpu_hours": (lo * seconds * n / 3600, hi * seconds * n / 3600), "steps": (lo, hi)})
    return rows


def calibration_check(config: WanConfig, g: Geometry) -> dict[str, float]:
    """The model at the measured point (by construction it reproduces it) and the terms that make it up."""
    rate, residual = calibrate(config, g)
    mem = stage_memory("sft", config, g, 1, 1, residual=residual)
    return {"tflops": rate / 1e12, "peak_gib": sum(mem.values()) / GIB,
            **{f"{k}_gib": v / GIB for k, v in mem.items()}}


def markdown(rows: list[dict]) -> str:
    fits = " | ".join(f"fits {name}" for name in GPU_BYTES)
    head = ("| stage | GPUs | micro-batches / GPU | GPU memory (GiB) | " + fits + " | s / step | samples / s | "
            "steps (paper) | GPU-hours |")
    lines = [head, "|" + "---|" * (8 + len(GPU_BYTES))]
    for r in rows:
        lo, hi = r["gpu_hours"]
        steps = f"{r['steps'][0]}" if r["steps"][0] == r["steps"][1] else f"{r['steps'][0]}-{r['steps'][1]}"
        hours = f"{lo:.0f}" if math.isclose(lo, hi) else f"{lo:.0f}-{hi:.0f}"
        ok = " | ".join("yes" if r["fits"][name] else "no" for name in GPU_BYTES)
        lines.append(f"| {r['stage']} | {r['gpus']} | {r['micro_batches']} | {r['memory_gib']:.1f} | {ok} | "
                     f"{r['seconds_per_step']:.0f} | {r['samples_per_second']:.2f} | {steps} | {hours} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chameleon_core.training.estimate", description=__doc__.split("\n")[0])
    p.add_argument("--gpus", default="1,2,4,8", help="GPU counts, comma-separated (default 1,2,4,8)")
    p.add_argument("--global-batch", type=int, default=64, help="samples per optimiser step (the paper's 64)")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--width", type=int, default=704)
    p.add_argument("--height", type=int, default=1280)
    p.add_argument("--markdown", action="store_true", help="print the table of docs/training_5b.md")
    args = p.parse_args(argv)
    try:
        gpus = [int(x) for x in args.gpus.split(",") if x.strip()]
        if not gpus or min(gpus) < 1 or args.global_batch < 1:
            raise ValueError(f"--gpus and --global-batch must be >= 1, got {args.gpus!r}, {args.global_batch}")
        if not is_whole_video(args.frames):
            raise ValueError(f"--frames must be 4k+1, got {args.frames}")
        config = preset("wan2.2-ti2v-5b")
        rows = estimate_rows(config, Geometry(args.frames, args.width, args.height), gpus, args.global_batch)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    cal = calibration_check(config, Geometry())
    sys.stdout.write(f"ESTIMATE (no GPU was used): calibrated on {CALIBRATION.what} on {CALIBRATION.device}: "
                     f"{CALIBRATION.seconds_per_step} s/step = {cal['tflops']:.0f} TFLOP/s, {CALIBRATION.peak_gib} GiB "
                     f"peak (analytic terms {cal['peak_gib'] - cal['residual_gib']:.1f} GiB, residual "
                     f"{cal['residual_gib']:+.2f} GiB)\n")
    if args.markdown:
        sys.stdout.write(markdown(rows) + "\n")
        return 0
    for r in rows:
        lo, hi = r["gpu_hours"]
        terms = ", ".join(f"{k} {v:.1f}" for k, v in r["memory_terms_gib"].items() if v)
        fits = ", ".join(name for name, ok in r["fits"].items() if ok) or "neither GPU"
        sys.stdout.write(f"{r['stage']:>27} x{r['gpus']}: {r['memory_gib']:6.1f} GiB/GPU ({terms}; fits {fits}); "
                         f"{r['seconds_per_step']:6.1f} s/step, {r['samples_per_second']:.2f} samples/s; "
                         f"{lo:.0f}-{hi:.0f} GPU-hours for {r['steps'][0]}-{r['steps'][1]} steps\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
