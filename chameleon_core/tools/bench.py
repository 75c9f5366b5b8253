"""Streaming benchmark with random weights: ``python -m chameleon_core.tools.bench``.

Runs any preset (or a "real-shaped slice" of one with ``--layers``) at any resolution, no checkpoint needed, and
reports:

- time per chunk against chunk index (backbone: few-step denoising + clean pass);
- backbone FPS and end-to-end FPS including streaming VAE decode (pixel frames per second; a chunk of 3 latent
  frames is 12 video frames, the first chunk 9);
- peak memory, and the KV-cache size;
- the speedup of cached streaming over recomputing the whole context (every earlier frame) each chunk, at several
  stream lengths -- a cache-less causal model has to re-run its context, so this ratio grows with length;
- with ``--decoder taehv[:PATH]``: end-to-end FPS with the tiny decoder too (the same latents decoded chunk by
  chunk with ``consume=True``, as the session does), beside the full VAE's;
- first-chunk latency (cold: the first chunk of the process, compilation included; warm: the session's first);
- ops per chunk (aten calls under a dispatch counter, ~ kernels in eager mode; on CUDA also the kernels the
  profiler sees) and host syncs per chunk (item/bool reads and device-to-host copies);
- with ``--clean-pass-check N``: N chunks with the clean pass skipped against the exact path (latent difference
  and backbone time).

``--compare diffusers`` / ``--compare decoder`` run the side-by-side CPU comparisons of docs/benchmarks/realtime.md
instead of a stream.

``--profile NAME`` streams a public student's loop (:mod:`chameleon_core.profiles`: chunk, window, sink, steps,
sampler; no reference / garment) at its native resolution with its architecture, unless ``--preset`` / ``--height``
/ ``--width`` / the stream options say otherwise; without it the stream is FashionChameleon's, as before.

Writes JSON with ``--json``. Examples::

    python -m chameleon_core.tools.bench --preset tiny --height 256 --width 256 --latent-frames 120
    python -m chameleon_core.tools.bench --preset wan2.2-ti2v-5b --layers 2 --height 256 --width 256 --latent-frames 120
    python -m chameleon_core.tools.bench --preset wan2.2-ti2v-5b --height 1280 --width 704 --device cuda --dtype bf16
    python -m chameleon_core.tools.bench --profile longlive2 --device cuda --dtype bf16 --vae wan2.2
    python -m chameleon_core.tools.bench --profile self_forcing --preset tiny-wan2.1 --height 64 --width 64
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
from ..profiles import PROFILE_NAMES, PROFILES
from ..session import Session
from ..streaming import Rollout, generate, start_stream
from ..random_models import random_transformer

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
    model: WanModel, context: torch.Tensor, prior_frames: int, chunk: int, h: int, w: int, steps: int, repeats: int,
    cond: int = 2,
) -> float:
    """Seconds to produce one chunk *without* a KV cache: every denoising step and the clean pass re-run a full
    forward over ``[cond conditions, prior_frames clean frames, the chunk]`` under the block-causal mask."""
    cfg, device = model.config, model.device
    text = model.prepare_text(context)
    n_video = prior_frames + chunk
    x = torch.randn(1, cfg.in_dim, cond + n_video, h, w, device=device)
    tpf = cfg.tokens_per_latent_grid(h, w)
    mask = FullAttention(frame_block_mask(cond, n_video, chunk, tpf, device=device))
    frame_t = torch.zeros(1, cond + n_video, device=device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps + 1):
            model.forward_frames(x, frame_t, 0, text, mask)
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


STREAM_DEFAULTS = {"chunk_frames": 3, "cache_frames": 23, "steps": 4}
"""The stream options' values without ``--profile`` (FashionChameleon's)."""


def resolve_args(args: argparse.Namespace) -> tuple[argparse.Namespace, StreamSettings | None]:
    """Fill the options left unset: from ``--profile`` (its architecture, native size and stream settings, the
    settings resolved later at the size) or the FashionChameleon defaults. Returns ``(args, None)``: the profile's
    settings need the token count, see :func:`stream_settings`."""
    prof = PROFILES[args.profile] if args.profile else None
    filled = dict(vars(args))
    filled["preset"] = args.preset or (prof.model if prof else "tiny")
    filled["width"] = args.width or (prof.native_size[0] if prof else 256)
    filled["height"] = args.height or (prof.native_size[1] if prof else 256)
    if prof is None:
        for k, v in STREAM_DEFAULTS.items():
            filled[k] = v if filled[k] is None else filled[k]
    return argparse.Namespace(**filled), None


def stream_settings(args: argparse.Namespace, tokens_per_frame: int) -> StreamSettings:
    """The stream's settings: the profile's at this size with the options given over them, or FashionChameleon's."""
    if not args.profile:
        return StreamSettings(chunk_frames=args.chunk_frames, cache_frames=args.cache_frames, steps=args.steps)
    overrides = {k: getattr(args, k) for k in STREAM_DEFAULTS if getattr(args, k) is not None}
    return PROFILES[args.profile].settings_for(tokens_per_frame, **overrides)


def run(args: argparse.Namespace) -> dict[str, Any]:
    args, _ = resolve_args(args)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    cfg = preset(args.preset)
    if args.layers:
        cfg = replace(cfg, num_layers=args.layers, name=f"{cfg.name}[{args.layers} layers]")
    fam = cfg.latent
    h, w = fam.latent_size(args.height, args.width, patch=cfg.patch_size[1:])
    settings = stream_settings(args, cfg.tokens_per_latent_grid(h, w))
    c = settings.chunk_frames
    model = random_transformer(cfg, device=device, dtype=dtype, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed)
    cond = [torch.randn(1, cfg.in_dim, 1, h, w, generator=g).to(device) for _ in range(2)]
    context = torch.randn(1, min(64, cfg.text_len), cfg.text_dim, generator=g).to(device, dtype)
    latents_in = {"reference": cond[0], "garment": cond[1]} if settings.conditions else {"latent_size": (h, w)}

    vae = None
    if args.vae != "none":
        from ..vae import build_vae, check_vae_matches

        vae = build_vae(args.vae, device=str(device), dtype=dtype, seed=args.seed)
        check_vae_matches(vae, cfg.in_dim)
    tiny = _tiny_decoder(args.decoder, fam, device, dtype, args.seed)
    if args.compile:
        model.compile_blocks(dynamic=False)

    state = start_stream(model, context=context, seed=args.seed, settings=settings, **latents_in)
    # Warm-up chunk (kernel selection, allocator, compilation), not counted; its time is the cold first-chunk latency.
    _sync(device)
    t_cold = time.perf_counter()
    generate(state, c, noise=args.noise, clean_pass=not args.skip_clean_pass)
    _sync(device)
    cold_first_chunk_s = time.perf_counter() - t_cold
    per_chunk = count_chunk_ops(state, args.noise, not args.skip_clean_pass)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # The session loop every job runs: each chunk generated, then decoded at once (when a VAE is given).
    chunks = -(-args.latent_frames // c)
    session = Session(state, chunks=chunks, codec=vae, decode=vae is not None, overlap_decode=args.overlap_decode,
                      noise=args.noise, clean_pass=not args.skip_clean_pass)
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
    pixel_frames = state.video_frames
    backbone_s = sum(chunk_times)
    decode_s = sum(decode_times)
    tiny_times = decode_times_of(tiny, latents, c, fam, device) if tiny is not None else []
    clean_check = clean_pass_check(state, args.clean_pass_check) if args.clean_pass_check else None

    def at(i: int) -> float | None:
        return chunk_times[i] if i < len(chunk_times) else None

    lengths = sorted({k for k in args.recompute_at if k * c + c <= n_lat})
    recompute = []
    for k in lengths:
        t_re = recompute_chunk_time(model, context, k * c, c, h, w, len(state.timesteps), args.repeats,
                                    cond=settings.cond_frames)
        recompute.append({"chunk_index": k, "prior_frames": k * c, "recompute_s": t_re,
                          "cached_s": chunk_times[k], "speedup": t_re / chunk_times[k]})

    result = {
        "config": {
            "preset": cfg.name, "dim": cfg.dim, "layers": cfg.num_layers, "height": args.height, "width": args.width,
            "latent_grid": [h, w], "tokens_per_frame": state.geometry.tokens_per_frame, "chunk_frames": c,
            "cache_frames": settings.cache_frames, "sink_chunks": settings.sink_chunks, "steps": len(state.timesteps),
            "sampler": settings.sampler, "profile": args.profile or "fashionchameleon", "dtype": args.dtype,
            "vae": args.vae, "decoder": args.decoder, "latent_frames": n_lat, "pixel_frames": pixel_frames,
            "noise": args.noise, "clean_pass": not args.skip_clean_pass, "compile": args.compile,
            "overlap_decode": args.overlap_decode,
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
        # Decode overlapped (--overlap-decode) hides decode behind the next chunk: wall time is what counts then.
        "session_fps_wall": pixel_frames / wall,
        "tiny_decode_seconds": tiny_times,
        "end_to_end_fps_tiny_decoder": pixel_frames / (backbone_s + sum(tiny_times)) if tiny_times else None,
        "first_chunk_latency_s": {"cold": cold_first_chunk_s,
                                  "warm_backbone_plus_decode": chunk_times[0] + (decode_times[0] if decode_times else 0),
                                  "warm_with_tiny_decoder": chunk_times[0] + tiny_times[0] if tiny_times else None},
        "per_chunk": per_chunk,
        "clean_pass_check": clean_check,
        "wall_seconds": wall,
        "cache_mb": state.cache.nbytes / 2**20,
        "memory": _peak_memory(device),
        "recompute_vs_cached": recompute,
        "published_speed": PROFILES[args.profile].published_speed if args.profile else None,
    }
    return result


def _tiny_decoder(spec: str, fam, device: torch.device, dtype: torch.dtype, seed: int):
    """``none``, ``taehv`` (random weights of the released shape for the model's family) or ``taehv:PATH``."""
    if spec == "none":
        return None
    from ..taehv import TAEHV_PRESETS, load_taehv, random_taehv

    if spec.startswith("taehv:"):
        tiny = load_taehv(spec.split(":", 1)[1], device=device, dtype=dtype)
    elif spec == "taehv":
        tiny = random_taehv(TAEHV_PRESETS["taew2_2" if fam.channels == 48 else "taew2_1"], seed, device=device,
                            dtype=dtype)
    else:
        raise ValueError(f"--decoder must be none, taehv or taehv:PATH, got {spec!r}")
    if tiny.config.latent_channels != fam.channels:
        raise ValueError(f"the tiny decoder takes {tiny.config.latent_channels} latent channels, the model makes "
                         f"{fam.channels}; use taew2_2 for Wan2.2 and taew2_1 for Wan2.1")
    return tiny


@torch.no_grad()
def decode_times_of(decoder, latents: torch.Tensor, chunk: int, fam, device: torch.device) -> list[float]:
    """Seconds per chunk to decode model-space ``latents`` chunk by chunk (consume=True, as the session does)."""
    from ..decoding import StreamingDecoder

    dec = StreamingDecoder(decoder, fam)
    dec.decode(latents[:, :, :chunk].to(device))  # warm-up on a throwaway stream
    dec = StreamingDecoder(decoder, fam)
    times = []
    for start in range(0, latents.shape[2], chunk):
        piece = latents[:, :, start : start + chunk].to(device)
        _sync(device)
        t0 = time.perf_counter()
        dec.decode(piece)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


class _OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts aten calls (each one kernel or more in eager mode) and what makes the host wait: scalar reads (item /
    bool) of accelerator tensors and accelerator-to-host copies (``host_syncs``), host-to-accelerator copies
    (``h2d_copies``: synchronous from pageable memory), and scalar reads of host tensors (``cpu_scalar_reads``: no
    sync by themselves; on a CPU run every read lands here)."""

    SCALAR_OPS = ("aten._local_scalar_dense", "aten.is_nonzero", "aten.equal")

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.counts = {"host_syncs": 0, "h2d_copies": 0, "cpu_scalar_reads": 0}
        self.by_op: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        self.ops += 1
        self.by_op[name] = self.by_op.get(name, 0) + 1
        if name in self.SCALAR_OPS:
            self.counts["host_syncs" if args[0].device.type != "cpu" else "cpu_scalar_reads"] += 1
        elif name in ("aten._to_copy", "aten.copy_"):
            src = args[1] if name == "aten.copy_" else args[0]
            dst = torch.device(args[0].device if name == "aten.copy_" else kwargs.get("device") or src.device)
            if isinstance(src, torch.Tensor) and src.device.type != "cpu" and dst.type == "cpu":
                self.counts["host_syncs"] += 1
            elif isinstance(src, torch.Tensor) and src.device.type == "cpu" and dst.type != "cpu":
                self.counts["h2d_copies"] += 1
        return func(*args, **kwargs)


def count_chunk_ops(state, noise: str, clean_pass: bool) -> dict[str, Any]:
    """Ops (~ eager kernels) and host syncs of one chunk of ``Rollout.step`` (the chunk step plus its finite check
    and the host copy of the chunk); on CUDA also the device kernels the profiler records."""
    rollout = Rollout(state, noise=noise, clean_pass=clean_pass)
    rollout.step()  # caches warm (timestep embeddings, RoPE tables)
    with _OpCounter() as counter:
        rollout.step()
    out: dict[str, Any] = {"aten_ops": counter.ops, **counter.counts,
                           "top_ops": dict(sorted(counter.by_op.items(), key=lambda kv: -kv[1])[:12])}
    device = state.model.device
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            rollout.step()
            torch.cuda.synchronize(device)
        out["cuda_kernels"] = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    return out


@torch.no_grad()
def clean_pass_check(state, chunks: int) -> dict[str, Any]:
    """The same ``chunks`` with and without the clean pass (same seed): latent difference per chunk and backbone
    seconds of each path. Chunk 0 is identical by construction (no chunk reads its own keys)."""
    out: dict[str, Any] = {"chunks": chunks}
    lat = {}
    for exact in (True, False):
        rollout = Rollout(state, clean_pass=exact)
        pieces, secs = [], []
        for _ in range(chunks):
            _sync(state.model.device)
            t0 = time.perf_counter()
            pieces.append(rollout.step().float().cpu())
            secs.append(time.perf_counter() - t0)
        lat[exact] = pieces
        out["exact_backbone_s" if exact else "skipped_backbone_s"] = sum(secs)
    diffs = [(a - b).abs() for a, b in zip(lat[True], lat[False])]
    out["max_abs_diff_per_chunk"] = [d.max().item() for d in diffs]
    out["mean_abs_diff_per_chunk"] = [d.mean().item() for d in diffs]
    out["latent_rms"] = torch.cat(lat[True], 2).pow(2).mean().sqrt().item()
    return out


# -------------------------------------------------------------------------------------------------------------------
# Side-by-side comparisons (CPU-sized): our forward vs diffusers' Wan; the tiny decoder vs the full VAE
# -------------------------------------------------------------------------------------------------------------------


def _diffusers_wan(cfg, seed: int):
    """diffusers' WanTransformer3DModel for ``cfg`` with random weights, and our model loaded from the same file."""
    import tempfile
    from pathlib import Path

    import diffusers
    from safetensors.torch import save_file

    from ..checkpoints import load_transformer

    ref = diffusers.WanTransformer3DModel(
        patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm, eps=cfg.eps,
    ).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1.0, p.shape[-1] ** 0.5) if p.ndim > 1 else
                    0.05 * torch.randn(p.shape, generator=g))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "w.safetensors"
        save_file({"transformer." + k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
        ours = load_transformer(path, dtype=torch.float32)
    return ours, ref


@torch.no_grad()
def forward_vs_diffusers(preset_name: str, layers: int, height: int, width: int, frames: int, repeats: int,
                         dtypes: tuple[str, ...] = ("fp32", "bf16"), seed: int = 0) -> dict[str, Any]:
    """Our plain forward against diffusers' at the same weights and shapes, interleaved (ours, theirs, ours, ...) so
    machine noise hits both; the min of ``repeats`` per side. Text is encoded inside each call on both sides."""
    cfg = replace(preset(preset_name), num_layers=layers)
    ours32, ref32 = _diffusers_wan(cfg, seed)
    h, w = cfg.latent.latent_size(height, width, patch=cfg.patch_size[1:])
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1, cfg.in_dim, frames, h, w, generator=g)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g)
    t = torch.tensor([937.0])
    out: dict[str, Any] = {"preset": cfg.name, "layers": layers, "latent": [frames, h, w], "repeats": repeats,
                           "tokens": frames * h * w // 4, "threads": torch.get_num_threads()}
    for name in dtypes:
        dt = DTYPES[name]
        ours, ref = ours32.to(dt), ref32.to(dt)
        xs, cs = x.to(dt), ctx.to(dt)

        def run_ours(ours=ours, xs=xs, cs=cs):
            return ours(xs, t, cs)

        def run_ref(ref=ref, xs=xs, cs=cs):
            return ref(hidden_states=xs, timestep=t, encoder_hidden_states=cs, return_dict=False)[0]

        a, b = run_ours(), run_ref()  # warm-up
        err = (a.float() - b.float()).abs().max().item()
        times: dict[str, list[float]] = {"ours": [], "diffusers": []}
        for _ in range(repeats):
            for side, fn in (("ours", run_ours), ("diffusers", run_ref)):
                t0 = time.perf_counter()
                fn()
                times[side].append(time.perf_counter() - t0)
        out[name] = {"ours_s": min(times["ours"]), "diffusers_s": min(times["diffusers"]),
                     "ratio_ours_over_diffusers": min(times["ours"]) / min(times["diffusers"]), "max_abs_diff": err}
        logger.info("%s: ours %.3f s, diffusers %.3f s (ratio %.3f), max |diff| %.2e", name, out[name]["ours_s"],
                    out[name]["diffusers_s"], out[name]["ratio_ours_over_diffusers"], err)
    return out


@torch.no_grad()
def decoder_vs_vae(height: int, width: int, latent_frames: int, chunk: int, repeats: int, flops_height: int = 1280,
                   flops_width: int = 704, seed: int = 0) -> dict[str, Any]:
    """The tiny decoder against the full Wan2.2 VAE at the same latents: CPU seconds per chunk (interleaved, min of
    ``repeats``) at ``height x width``, and FLOPs per 12-frame chunk at ``flops_height x flops_width`` counted on the
    meta device (``FlopCounterMode``: convolutions, matmuls, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..latents import WAN22
    from ..taehv import TAEHV_PRESETS, TinyVideoDecoder, random_taehv
    from ..vae import WanVAE, build_vae

    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    # 1. FLOPs at full size, on meta (no memory, no time); the VAE's finite check reads values, so it is skipped.
    h, w = flops_height // WAN22.spatial_stride, flops_width // WAN22.spatial_stride
    z = torch.empty(1, 48, chunk, h, w, device="meta")
    meta_vae = build_vae("wan2.2", device="meta")
    meta_vae._check_finite = lambda *a, **k: None
    meta_tiny = TinyVideoDecoder(TAEHV_PRESETS["taew2_2"]).to("meta")
    flops = {}
    for name, fn in (("full_vae", meta_vae.decode_chunk), ("tiny", meta_tiny.decode_chunk)):
        _, st = fn(z, None)  # the first chunk; the steady state is the second
        with FlopCounterMode(display=False) as fc:
            fn(z, st)
        flops[name] = fc.get_total_flops()
    out["flops_per_chunk"] = {"size": [flops_height, flops_width], "latent_frames": chunk,
                              "video_frames": chunk * WAN22.temporal_stride, "full_vae_tflop": flops["full_vae"] / 1e12,
                              "tiny_tflop": flops["tiny"] / 1e12, "ratio": flops["full_vae"] / flops["tiny"]}
    # 2. CPU time at a small size, same latents, chunk by chunk with carried state.
    vae = build_vae("wan2.2", seed=seed)
    tiny = random_taehv(TAEHV_PRESETS["taew2_2"], seed)
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(1, 48, latent_frames, height // 16, width // 16, generator=g)
    best = {"full_vae": float("inf"), "tiny": float("inf")}
    for _ in range(repeats):
        for name, dec in (("full_vae", vae), ("tiny", tiny)):
            t0 = time.perf_counter()
            decode_times_of(dec, lat, chunk, WAN22, torch.device("cpu"))
            best[name] = min(best[name], time.perf_counter() - t0)
    assert isinstance(vae, WanVAE)
    out["cpu"] = {"size": [height, width], "latent_frames": latent_frames, "full_vae_s": best["full_vae"],
                  "tiny_s": best["tiny"], "ratio": best["full_vae"] / best["tiny"],
                  "note": "each timing includes one warm-up chunk on a throwaway stream"}
    logger.info("decode: full VAE %.2f s, tiny %.3f s (ratio %.1f); FLOPs/chunk at %dx%d: %.1f vs %.2f TFLOP",
                best["full_vae"], best["tiny"], out["cpu"]["ratio"], flops_height, flops_width,
                flops["full_vae"] / 1e12, flops["tiny"] / 1e12)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chameleon_core.tools.bench", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                   help="stream a public student's loop at its native size and architecture (docs/profiles.md)")
    p.add_argument("--preset", default=None, help="model preset (tiny, tiny-wan2.1, wan2.1-t2v-1.3b, wan2.2-ti2v-5b, "
                   "...); default: tiny, or the profile's")
    p.add_argument("--layers", type=int, default=0, help="keep only N blocks: a real-shaped slice of the preset")
    p.add_argument("--height", type=int, default=None, help="pixel height, a multiple of 32 (Wan2.2) / 16 (Wan2.1); "
                   "default 256, or the profile's native height")
    p.add_argument("--width", type=int, default=None, help="pixel width, a multiple of 32 (Wan2.2) / 16 (Wan2.1); "
                   "default 256, or the profile's native width")
    p.add_argument("--latent-frames", type=int, default=129, help="latent frames to stream (4 video frames each)")
    p.add_argument("--chunk-frames", type=int, default=None, help="latent frames per chunk (3, or the profile's)")
    p.add_argument("--cache-frames", type=int, default=None,
                   help="cache length in latent frames (2 cond + sink + window: 23, or the profile's)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (4, or the profile's)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--vae", default="none", help="VAE preset for end-to-end FPS (wan2.2, wan2.2-tiny, ...) or none")
    p.add_argument("--recompute-at", type=int, nargs="*", default=[5, 10, 20, 40],
                   help="chunk indices at which to time the no-cache recompute baseline")
    p.add_argument("--repeats", type=int, default=1, help="repeats of each recompute timing (min is kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the full result here")
    p.add_argument("--decoder", default="none", help="also decode with the tiny decoder: taehv (random weights) or "
                   "taehv:PATH (a taew2_1 / taew2_2 file); end-to-end FPS with both")
    p.add_argument("--overlap-decode", action="store_true", help="session decodes chunk k while k+1 generates")
    p.add_argument("--noise", choices=["cpu", "device"], default="cpu", help="where the chunk noise is drawn")
    p.add_argument("--skip-clean-pass", action="store_true", help="skip the t=0 clean pass (approximate)")
    p.add_argument("--clean-pass-check", type=int, default=0, help="compare N chunks without the clean pass to exact")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    p.add_argument("--compare", choices=["diffusers", "decoder"], help="instead of streaming: our forward vs "
                   "diffusers' Wan (--preset, --layers, --height/--width, --latent-frames as the clip, --repeats) in "
                   "fp32 and bf16; or the tiny decoder vs the full Wan2.2 VAE (CPU time at --height/--width, "
                   "--latent-frames; FLOPs at 1280x704)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.compare:
        args, _ = resolve_args(args)
        args.chunk_frames = args.chunk_frames or STREAM_DEFAULTS["chunk_frames"]
        if args.compare == "diffusers":
            result = forward_vs_diffusers(args.preset, args.layers or 1, args.height, args.width, args.latent_frames,
                                          args.repeats)
        else:
            result = decoder_vs_vae(args.height, args.width, args.latent_frames, args.chunk_frames, args.repeats)
        text = json.dumps(result, indent=2)
        if args.json:
            with open(args.json, "w") as f:
                f.write(text + "\n")
        print(text)
        return 0
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    summary = {k: result[k] for k in ("backbone_fps", "end_to_end_fps", "end_to_end_fps_tiny_decoder",
                                      "session_fps_wall", "first_chunk_latency_s", "chunk40_over_chunk5",
                                      "last10_over_first10_after_warmup", "cache_mb", "memory")}
    summary["per_chunk"] = {k: v for k, v in result["per_chunk"].items() if k != "top_ops"}
    if result["clean_pass_check"]:
        summary["clean_pass_check"] = result["clean_pass_check"]
    summary["recompute_speedup"] = {r["chunk_index"]: round(r["speedup"], 2) for r in result["recompute_vs_cached"]}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
