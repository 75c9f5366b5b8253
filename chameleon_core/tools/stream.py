"""Command line: stream a garment-switching video from weight files (or random weights) and time it.

``python -m chameleon_core`` runs the causal student chunk by chunk, switches garments (and, optionally, prompts)
at chunk boundaries by KV-cache rescheduling, decodes every chunk with the streaming VAE as soon as it is made, and
writes one continuous video: an mp4 (PyAV) or a folder of ``frame_00000.png`` ... It prints frames per second of
the backbone alone and end to end (backbone + streaming decode + switches), the latency of each switch and the peak
memory. A switch's latency is what a viewer waits for at the cut: encoding the new garment and the KV rescheduling
(refresh, withdraw, and disentangle's decode + re-encode of the last frame). Writing PNG / mp4 frames is not timed.
Examples::

    # Real weights, precomputed prompt features, a switch to a second garment around video frame 40
    python -m chameleon_core \\
        --student models/diffusion_models/fashionchameleon_student.safetensors \\
        --vae models/vae/wan2.2_vae.safetensors --prompt-embeds prompt.safetensors \\
        --reference person.png --garment shirt.png --switch 40:dress.png --frames 121 --out video.mp4

    # The prompt encoded here by umT5-XXL (needs transformers) instead of a prompt-embeddings file
    python -m chameleon_core ... --prompt "a woman walks along a street" --text-encoder models/umt5-xxl

    # Smoke test without weights: a random tiny transformer and VAE; PNG frames and a JSON timing summary
    python -m chameleon_core --random tiny --reference person.png --garment shirt.png \\
        --width 128 --height 128 --frames 33 --switch 12:dress.png --out frames/ --json timing.json

    # A public student with its own loop (the profile is read from the file, or given with --profile): LongLive 2.0
    # text-to-video with a prompt switch and a new shot; --image first.png makes it image-to-video
    python -m chameleon_core --student models/diffusion_models/model_bf16.pt \\
        --vae models/vae/wan2.2_vae.safetensors --prompt-embeds city.safetensors \\
        --prompt-switch 97:rain.safetensors --shot-switch 193:beach.safetensors --frames 289 --out longlive.mp4

Frame arithmetic (Wan VAEs, 4x temporal): ``T_lat = (frames - 1) // 4 + 1`` latent frames, generated in chunks of
``--chunk-frames`` (3) latent frames; the first chunk decodes to 9 video frames, every later one to 12. ``--frames``
is rounded up to whole chunks, and a switch at video frame N takes effect at the first chunk boundary at or after N
(both logged). Prompt features come from a file written by ``python -m chameleon_core.tools.prompt_embeds`` or
from a local umT5-XXL folder.

The run, top to bottom (one function each): 1. parse the arguments; 2. check everything the user gave, before
anything heavy is loaded (files, sizes, frame counts, switch points, output); 3. load the images; 4. prompt
features; 5. VAE and transformer; 6. encode the reference and garment; 7. stream: generate segments between switch
points, decode each chunk as it arrives, switch at the boundaries; 8. the summary.

User errors (a wrong path, size or value) end with an ``error: ...`` line on stderr (missing files: one line per
file, saying what to get and where) and exit code 2, never a traceback (``-v`` shows it): the error policy of every
command of the pack (:mod:`.command`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import load_vae
from ..config import WanConfig
from ..images import fit_garment, fit_reference, load_image
from ..model import WanModel
from ..profiles import AUTO, PROFILE_NAMES, load_student
from ..quant import quantize_blocks_fp8_
from ..session import (
    GarmentSwitch,
    PromptSwitch,
    Session,
    TimedSwitch,
    encode_condition,
)
from ..streaming import NonFiniteChunkError, StreamState, start_stream
from ..taehv import TAEHV_PRESETS, TinyVideoDecoder, load_taehv, random_taehv
from ..random_models import random_transformer
from ..text import encode_prompts, load_prompt_embeddings
from ..vae import NonFiniteVAEError, WanVAE, build_vae, check_vae_matches
from .command import check_output_file, parse_args, run_command, say
from .stream_plan import DTYPES, RunPlan, plan_run
from .video_files import FrameWriter, open_output, to_uint8_frames

logger = logging.getLogger(__name__)

PROG = "python -m chameleon_core"
RANDOM_PROMPT_TOKENS = 32
"""Tokens of the random prompt features of ``--random`` (capped at the model's ``text_len``)."""
SWITCH_OPTIONS = ("--switch", "--prompt-switch")
"""Options whose FRAME:PATH value may start with a minus sign (a wrong frame, refused with its own message)."""

# -------------------------------------------------------------------------------------------------------------------
# 1. Arguments
# -------------------------------------------------------------------------------------------------------------------


def _examples() -> str:
    """The examples of the module docstring, for ``--help``."""
    text = (__doc__ or "").split("Examples::", 1)[-1].split("\nFrame arithmetic", 1)[0]
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip("\n"), "  ")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Stream a FashionChameleon video with garment switches at chunk boundaries; write an mp4 or PNG "
        "frames; print backbone and end-to-end frames per second.",
        epilog=_examples(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w = p.add_argument_group("weights (or --random)")
    w.add_argument("--student", type=Path, metavar="PATH",
                   help="causal student checkpoint: a file, a sharded index json, or its folder (any Wan layout)")
    w.add_argument("--vae", type=Path, metavar="PATH", help="Wan VAE: Wan2.2_VAE.pth or wan2.2_vae.safetensors")
    w.add_argument("--random", metavar="PRESET", help="no weight files: a random transformer of this preset (e.g. "
                   "tiny) and a random VAE of its latent family, for smoke tests and timing")
    w.add_argument("--profile", choices=[AUTO, *PROFILE_NAMES], default=AUTO,
                   help="the student's streaming loop (docs/profiles.md); auto: read from the checkpoint (metadata, "
                   "LongLive's merged-file entries, a file name naming the project), else fashionchameleon")
    w.add_argument("--lora", type=Path, metavar="PATH",
                   help="a LoRA merged into the student as it loads (LongLive 1.0's lora.pt with longlive_base.pt)")
    t = p.add_argument_group("prompt (random features with --random if none is given)")
    t.add_argument("--prompt-embeds", type=Path, metavar="FILE",
                   help="prompt features, a .safetensors from python -m chameleon_core.tools.prompt_embeds")
    t.add_argument("--prompt", metavar="TEXT", help="prompt text, encoded with --text-encoder")
    t.add_argument("--text-encoder", type=Path, metavar="DIR", help="local HuggingFace-format umT5-XXL folder")
    v = p.add_argument_group("video")
    v.add_argument("--reference", type=Path, metavar="IMG",
                   help="the person image (FashionChameleon; public students stream without it)")
    v.add_argument("--garment", type=Path, metavar="IMG", help="the first garment image (FashionChameleon)")
    v.add_argument("--image", type=Path, metavar="IMG",
                   help="image-to-video: the first frame (profiles that take one: longlive2)")
    v.add_argument("--switch", action="append", default=[], metavar="FRAME:IMAGE",
                   help="switch to the garment IMAGE at video frame FRAME (rounded up to a chunk boundary); repeatable")
    v.add_argument("--prompt-switch", action="append", default=[], metavar="FRAME:EMBEDS",
                   help="switch to the prompt features in EMBEDS (.safetensors) at video frame FRAME; repeatable")
    v.add_argument("--shot-switch", action="append", default=[], metavar="FRAME:EMBEDS",
                   help="a prompt switch that starts a new shot (LongLive 2.0: RoPE offset, shot sink); repeatable")
    v.add_argument("--frames", type=int, default=81, help="output video frames, rounded up to whole chunks (81)")
    v.add_argument("--width", type=int, default=None,
                   help="pixels, a multiple of 32 for Wan2.2 models (the profile's: 704 for fashionchameleon)")
    v.add_argument("--height", type=int, default=None,
                   help="pixels, a multiple of 32 for Wan2.2 models (the profile's: 1280 for fashionchameleon)")
    v.add_argument("--seed", type=int, default=0, help="noise seed; the same seed gives the same frames (0)")
    s = p.add_argument_group("stream and switches")
    s.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (the profile's: 4)")
    s.add_argument("--chunk-frames", type=int, default=None, help="latent frames per chunk (the profile's: 3)")
    s.add_argument("--cache-frames", type=int, default=None,
                   help="KV cache length in latent frames: 2 conditions + sink + history (the profile's: 23)")
    s.add_argument("--sink-chunks", type=int, default=None, help="chunks kept as the attention sink (the profile's: 1)")
    s.add_argument("--no-refresh", action="store_true", help="ablation: keep the old garment's KV at a switch")
    s.add_argument("--no-withdraw", action="store_true", help="ablation: keep the history KV at a switch")
    s.add_argument("--no-disentangle", action="store_true", help="ablation: keep the original reference KV")
    s.add_argument("--keep-sink", action="store_true", help="withdraw the history but keep the sink")
    f = p.add_argument_group("real time (the full VAE and the exact path stay the defaults)")
    f.add_argument("--decoder", metavar="PATH",
                   help="decode with the tiny streaming decoder (TAEHV: taew2_2.safetensors for Wan2.2, taew2_1 for "
                   "Wan2.1; ComfyUI keeps them in models/vae_approx/), or 'random' with --random; switches still "
                   "encode with --vae")
    f.add_argument("--overlap-decode", action="store_true",
                   help="decode chunk k while chunk k+1 generates (same frames; switches land one chunk later)")
    f.add_argument("--device-noise", action="store_true",
                   help="draw noise on the device (no host copy per step; frames then differ between device types)")
    f.add_argument("--skip-clean-pass", action="store_true",
                   help="keep the last denoising step's keys instead of the t=0 clean pass (4 passes per chunk, not 5; "
                   "changes the video)")
    f.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    f.add_argument("--fp8-matmul", choices=["off", "auto", "scaled"], default="off",
                   help="with --dtype fp8: run block linears as scaled fp8 matmuls (auto: where the GPU has them)")
    r = p.add_argument_group("runtime and output")
    r.add_argument("--dtype", choices=[*DTYPES, "fp8"], default=None,
                   help="compute dtype; fp8 = bf16 compute with fp8 block weights (bf16 on CUDA, fp32 on CPU)")
    r.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (cuda if available)")
    r.add_argument("--out", type=Path, default=Path("chameleon_out"), metavar="PATH",
                   help="*.mp4 (needs PyAV: pip install av), or a folder for frame_00000.png ... (chameleon_out)")
    r.add_argument("--fps", type=float, default=None, help="frame rate of the mp4 (the profile's: 24, 16 for Wan2.1)")
    r.add_argument("--json", type=Path, metavar="FILE", help="also write the timing summary here")
    r.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks of errors")
    return p


# -------------------------------------------------------------------------------------------------------------------
# 3. Images
# -------------------------------------------------------------------------------------------------------------------


def load_fitted(path: Path, plan: RunPlan, garment: bool) -> torch.Tensor:
    """An image file fitted to the video size as in training: ``[1, H, W, 3]`` in 0..1."""
    image = load_image(path)  # ImageFileError (a ValueError) names the file
    fit = fit_garment if garment else fit_reference
    return fit(image, plan.width, plan.height, name=f"the {'garment' if garment else 'reference'} image {path}")


# -------------------------------------------------------------------------------------------------------------------
# 4. Prompt features
# -------------------------------------------------------------------------------------------------------------------


def check_context(context: torch.Tensor, config: WanConfig, source: str) -> torch.Tensor:
    """Prompt features ``[1, L, D]`` that fit the model (``D == text_dim``, ``L <= text_len``), all finite."""
    if not bool(torch.isfinite(context).all()):
        raise ValueError(
            f"{source} gives prompt features with NaN/inf values; encode the prompt again (in bf16 or fp32)"
        )
    if context.shape[-1] != config.text_dim:
        raise ValueError(
            f"{source} gives {context.shape[-1]} features per token but the model takes text_dim={config.text_dim}; "
            "use the text encoder that matches the model (umT5-XXL: 4096)"
        )
    if context.shape[1] > config.text_len:
        raise ValueError(
            f"{source} has {context.shape[1]} tokens but the model takes at most text_len={config.text_len}; "
            "encode a shorter prompt"
        )
    return context


def load_embeddings(path: Path, config: WanConfig) -> torch.Tensor:
    return check_context(load_prompt_embeddings(path, text_dim=config.text_dim), config, str(path))


def prompt_features(args: argparse.Namespace, plan: RunPlan) -> torch.Tensor:
    """The first prompt's features ``[1, L, text_dim]``: from a file, from umT5-XXL, or random (--random only).

    Runs after the prompt-switch files are read (cheap), so their errors come before the encoder is loaded.
    """
    config = plan.config
    if args.prompt_embeds:
        return load_embeddings(args.prompt_embeds, config)
    if args.prompt is not None:
        logger.info("encoding the prompt with umT5 from %s", args.text_encoder)
        (context,) = encode_prompts(args.text_encoder, [args.prompt], device=plan.device, dtype=torch.bfloat16)
        return check_context(context.cpu(), config, f"the text encoder in {args.text_encoder}")
    gen = torch.Generator().manual_seed(args.seed)
    logger.info("no prompt given: random prompt features (--random)")
    return torch.randn(1, min(RANDOM_PROMPT_TOKENS, config.text_len), config.text_dim, generator=gen)


def attach_payloads(args: argparse.Namespace, plan: RunPlan) -> RunPlan:
    """Load each switch's garment image or prompt features into its event."""
    events = tuple(
        replace(e, payload=load_fitted(e.source, plan, garment=True) if e.kind == "garment"
                else load_embeddings(e.source, plan.config))  # prompt and shot switches: features
        for e in plan.events
    )
    return replace(plan, events=events)


# -------------------------------------------------------------------------------------------------------------------
# 5. Weights
# -------------------------------------------------------------------------------------------------------------------


def load_vae_for(args: argparse.Namespace, plan: RunPlan) -> WanVAE:
    """The Wan VAE (file, or random of the model's latent family), checked against the model's channels."""
    if args.random:
        family = plan.family.name
        name = f"{family}-tiny" if plan.config.name.startswith("tiny") else family
        logger.info("random %s VAE (preset %s)", family, name)
        vae = build_vae(name, device=plan.device, dtype=plan.dtype, seed=0)
    else:
        vae = load_vae(args.vae, device=plan.device, dtype=plan.dtype)
    check_vae_matches(vae, plan.config.in_dim)
    return vae


def load_model(args: argparse.Namespace, plan: RunPlan) -> WanModel:
    if args.random:
        logger.info("random %s transformer", plan.config.name)
        model = random_transformer(plan.config, device=plan.device, dtype=plan.dtype, seed=0)
    else:
        model, _, _ = load_student(args.student, profile_name=plan.profile.name, lora=args.lora, dtype=plan.dtype,
                                   device=plan.device)
    if plan.fp8:
        quantize_blocks_fp8_(model, plan.dtype, matmul=args.fp8_matmul)
    elif args.fp8_matmul != "off":
        raise ValueError(f"--fp8-matmul {args.fp8_matmul} needs fp8 block weights; add --dtype fp8")
    if args.compile:
        model.compile_blocks()
    return model.requires_grad_(False)


def load_decoder(args: argparse.Namespace, plan: RunPlan) -> TinyVideoDecoder | None:
    """The tiny streaming decoder of --decoder (None: the full VAE decodes), checked against the model's latents."""
    if args.decoder is None:
        return None
    if args.decoder == "random":
        if not args.random:
            raise ValueError("--decoder random is for smoke runs with --random; pass a taew2_2 / taew2_1 file")
        preset_name = "taew2_2" if plan.family.channels == 48 else "taew2_1"
        decoder = random_taehv(TAEHV_PRESETS[preset_name], seed=0, device=plan.device, dtype=plan.dtype)
    else:
        decoder = load_taehv(args.decoder, device=plan.device, dtype=plan.dtype)
    if decoder.config.latent_channels != plan.config.in_dim:
        raise ValueError(
            f"--decoder {args.decoder} decodes {decoder.config.latent_channels}-channel latents but the model makes "
            f"{plan.config.in_dim}-channel ({plan.family.name}) latents; use "
            f"{'taew2_2' if plan.config.in_dim == 48 else 'taew2_1'}"
        )
    return decoder


# -------------------------------------------------------------------------------------------------------------------
# 7. Streaming: the session loop, each chunk written as soon as it is decoded
# -------------------------------------------------------------------------------------------------------------------


@dataclass
class Timings:
    """Seconds measured during the stream (each after a device sync on CUDA), from the session's chunks."""

    chunk_seconds: list[float] = field(default_factory=list)
    """Backbone time per chunk: few-step denoising + clean pass."""
    decode_seconds: list[float] = field(default_factory=list)
    """Streaming VAE decode time per chunk."""
    switches: list[dict[str, Any]] = field(default_factory=list)
    """Per switch: kind, source, requested and landed frame, seconds (garment encoding + rescheduling)."""


def timeline(plan: RunPlan) -> list[TimedSwitch]:
    """The plan's switch events as the session's timeline."""
    opts = plan.options
    out = []
    for e in plan.events:
        if e.kind in ("prompt", "shot"):
            switch = PromptSwitch(e.payload, label=str(e.source), new_shot=e.kind == "shot")
        else:
            switch = GarmentSwitch(e.payload, refresh=opts.refresh, withdraw=opts.withdraw,
                                   disentangle=opts.disentangle, withdraw_sink=opts.withdraw_sink, label=str(e.source))
        out.append(TimedSwitch(e.chunk, switch))
    return out


def run_stream(state: StreamState, plan: RunPlan, vae: WanVAE, writer: FrameWriter, args: argparse.Namespace,
               decoder: TinyVideoDecoder | None = None) -> Timings:
    """The session loop: each chunk decoded and written as soon as it is made, switches at their boundaries."""
    timings = Timings()
    requested = {(e.chunk, "prompt" if e.kind == "shot" else e.kind): e.requested_frame for e in plan.events}
    session = Session(state, chunks=plan.chunks, codec=vae, timeline=timeline(plan), decoder=decoder,
                      overlap_decode=args.overlap_decode, noise="device" if args.device_noise else "cpu",
                      clean_pass=not args.skip_clean_pass)
    for chunk in session:
        for s in chunk.switches:
            timings.switches.append({"kind": s.kind, "source": s.label, "requested_frame": requested[(s.chunk, s.kind)],
                                     "frame": s.video_frame, "seconds": s.seconds})
        timings.chunk_seconds.append(chunk.backbone_seconds)
        timings.decode_seconds.append(chunk.decode_seconds)
        first = writer.count
        writer.write(to_uint8_frames(chunk.pixels))
        logger.info("chunk %d/%d: video frames %d-%d, backbone %.3f s, decode %.3f s", chunk.index + 1, plan.chunks,
                    first, writer.count - 1, chunk.backbone_seconds, chunk.decode_seconds)
    return timings


# -------------------------------------------------------------------------------------------------------------------
# 8. Summary
# -------------------------------------------------------------------------------------------------------------------


def peak_memory(device: torch.device) -> tuple[float | None, str]:
    """(MB, what was measured): CUDA max_memory_allocated on a GPU, else the host's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max_memory_allocated"
    try:
        import resource
    except ImportError:  # Windows
        return None, "unavailable on this platform"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "host peak RSS"  # bytes on macOS, KiB on Linux


def summarize(plan: RunPlan, timings: Timings, frames_written: int, model_name: str) -> dict[str, Any]:
    backbone = sum(timings.chunk_seconds)
    decode = sum(timings.decode_seconds)
    switch = sum(s["seconds"] for s in timings.switches)
    memory, memory_kind = peak_memory(plan.device)
    return {
        "model": model_name,
        "profile": plan.profile.name,
        "device": str(plan.device),
        "dtype": "fp8" if plan.fp8 else {v: k for k, v in DTYPES.items()}[plan.dtype],
        "width": plan.width,
        "height": plan.height,
        "latent_frames": plan.latent_frames,
        "video_frames": frames_written,
        "chunks": len(timings.chunk_seconds),
        "backbone_seconds": backbone,
        "decode_seconds": decode,
        "switch_seconds": switch,
        "backbone_fps": frames_written / backbone,
        "end_to_end_fps": frames_written / (backbone + decode + switch),
        "switches": timings.switches,
        "chunk_seconds": timings.chunk_seconds,
        "decode_chunk_seconds": timings.decode_seconds,
        "peak_memory_mb": memory,
        "peak_memory_kind": memory_kind,
        "output": str(plan.out),
    }


def format_summary(s: dict[str, Any]) -> str:
    mem = "n/a" if s["peak_memory_mb"] is None else f"{s['peak_memory_mb']:.0f} MB"
    lines = [
        f"FashionChameleon stream: {s['model']} ({s['profile']} profile), {s['width']}x{s['height']}, {s['dtype']} on "
        f"{s['device']}",
        f"  latent frames   {s['latent_frames']} ({s['chunks']} chunks)",
        f"  video frames    {s['video_frames']}",
        f"  backbone        {s['backbone_seconds']:.3f} s -> {s['backbone_fps']:.2f} FPS",
        f"  VAE decode      {s['decode_seconds']:.3f} s (streaming, chunk by chunk)",
        f"  switches        {len(s['switches'])}, {s['switch_seconds']:.3f} s",
    ]
    for w in s["switches"]:
        lines.append(f"    {w['kind']:<8} at frame {w['frame']} (asked {w['requested_frame']}): {w['seconds']:.3f} s")
    lines += [
        f"  end to end      {s['end_to_end_fps']:.2f} FPS (backbone + decode + switches)",
        f"  peak memory     {mem} ({s['peak_memory_kind']})",
        f"  output          {s['output']}",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------------------
# The run
# -------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Steps 2-8; returns the summary. Raises ValueError / FileNotFoundError for user errors."""
    # 2. Checks: files, sizes, frames, switch points, output -- nothing heavy loaded yet.
    plan = plan_run(args)
    if plan.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(plan.device)
    # 3. Images, fitted to the video size (reference and first frame: cover-crop; garments: contain + white pad).
    conditions = plan.stream.conditions
    reference = load_fitted(args.reference, plan, garment=False) if conditions else None
    garment = load_fitted(args.garment, plan, garment=True) if conditions else None
    image = load_fitted(args.image, plan, garment=False) if args.image is not None else None
    plan = attach_payloads(args, plan)
    # 4. Prompt features (the umT5 encoder, if used, is freed before the transformer loads).
    context = prompt_features(args, plan)
    # 5. Weights: the small ones first (tiny decoder, VAE), so a damaged or mismatched file fails before the large
    # transformer loads.
    decoder = load_decoder(args, plan)
    vae = load_vae_for(args, plan)
    model = load_model(args, plan)
    # 6. Condition latents (or the first frame), in the model's latent space.
    size = (plan.width, plan.height)
    latents = {}
    if conditions:
        latents["reference"] = encode_condition(vae, plan.family, reference, garment=False, size=size)
        latents["garment"] = encode_condition(vae, plan.family, garment, garment=True, size=size)
    else:
        latents["latent_size"] = plan.family.latent_size(plan.height, plan.width)
        if image is not None:
            latents["first_frame"] = encode_condition(vae, plan.family, image, garment=False, size=size)
    # 7. Stream.
    logger.info("streaming %d chunks = %d video frames at %dx%d (%s profile)", plan.chunks, plan.video_frames,
                plan.width, plan.height, plan.profile.name)
    state = start_stream(model, context=context, seed=args.seed, settings=plan.stream, **latents)
    with open_output(plan.out, plan.fps, plan.width, plan.height) as writer:
        timings = run_stream(state, plan, vae, writer, args, decoder)
        frames = writer.count
    # 8. Summary.
    name = f"{plan.config.name} (random weights)" if args.random else str(args.student)
    return summarize(plan, timings, frames, name)


def attach_switch_values(argv: Sequence[str]) -> list[str]:
    """``--switch -12:x.png`` as ``--switch=-12:x.png``: argparse would take ``-12:x.png`` for an option and say only
    "expected one argument"; attached, the value reaches the switch check, which names it and the fix."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        if items[i] in SWITCH_OPTIONS and i + 1 < len(items) and items[i + 1][:1] == "-" and items[i + 1][1:2].isdigit():
            out.append(f"{items[i]}={items[i + 1]}")
            i += 2
            continue
        out.append(items[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m chameleon_core``; returns the exit code (2 for user errors, 1 for a chunk or a
    decode that turned non-finite, 130 for an interrupt)."""
    args = parse_args(build_parser(), attach_switch_values(sys.argv[1:] if argv is None else argv))
    if isinstance(args, int):
        return args
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")

    def body() -> int:
        if args.json:
            check_output_file(args.json, "--json", "timing.json")  # before the stream, not after it
        try:
            summary = run(args)
        except (NonFiniteChunkError, NonFiniteVAEError) as e:
            say(sys.stderr, f"error: {e}")
            return 1
        say(sys.stdout, format_summary(summary))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
        return 0

    return run_command(None, body, verbose=args.verbose,
                       interrupted=f"interrupted; the frames written so far are in {args.out}")


if __name__ == "__main__":
    sys.exit(main())

