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

Frame arithmetic (Wan VAEs, 4x temporal): ``T_lat = (frames - 1) // 4 + 1`` latent frames, generated in chunks of
``--chunk-frames`` (3) latent frames; the first chunk decodes to 9 video frames, every later one to 12. ``--frames``
is rounded up to whole chunks, and a switch at video frame N takes effect at the first chunk boundary at or after N
(both logged). Prompt features come from a file written by ``python -m chameleon_core.text`` or from a local
umT5-XXL folder.

The run, top to bottom (one function each): 1. parse the arguments; 2. check everything the user gave, before
anything heavy is loaded (files, sizes, frame counts, switch points, output); 3. load the images; 4. prompt
features; 5. VAE and transformer; 6. encode the reference and garment; 7. stream: generate segments between switch
points, decode each chunk as it arrives, switch at the boundaries; 8. the summary.

User errors (a wrong path, size or value) end with an ``error: ...`` line on stderr (missing files: one line per
file, saying what to get and where) and exit code 2, never a traceback (``-v`` shows it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .bench import random_transformer
from .checkpoints import checkpoint_kind, inspect_checkpoint, load_transformer, load_vae
from .config import StreamSettings, WanConfig, preset
from .images import fit_garment, fit_reference, load_image
from .latents import LatentFamily
from .model import WanModel
from .quant import quantize_blocks_fp8_
from .session import GarmentSwitch, PromptSwitch, Session, TimedSwitch, encode_condition
from .streaming import NonFiniteChunkError, StreamState, start_stream
from .text import encode_prompts, load_prompt_embeddings
from .vae import WanVAE, build_vae, check_vae_matches

logger = logging.getLogger(__name__)

PROG = "python -m chameleon_core"
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
"""Compute dtypes; ``fp8`` is bf16 compute with the block weights stored in fp8 (:mod:`chameleon_core.quant`)."""
FRAME_PATTERN = "frame_{:05d}.png"
RANDOM_PROMPT_TOKENS = 32
"""Tokens of the random prompt features of ``--random`` (capped at the model's ``text_len``)."""
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


# -------------------------------------------------------------------------------------------------------------------
# What to download, said once
# -------------------------------------------------------------------------------------------------------------------

STUDENT_HELP = (
    "a causal (streaming, few-step) Wan student checkpoint. The FashionChameleon student weights are not public "
    "yet; Self-Forcing, CausVid and LongLive causal students load too, since they share the Wan key names "
    "(Self-Forcing, CausVid and LongLive are Wan2.1-T2V-1.3B students: use them with the Wan2.1 VAE at --width 832 "
    "--height 480; LongLive 2.0 is a Wan2.2-TI2V-5B student). Any layout loads: original Wan or diffusers "
    "safetensors, ComfyUI repackaged (incl. fp8 scaled), or a training .pt. Put it in ComfyUI's "
    "models/diffusion_models/ (or anywhere) and pass --student models/diffusion_models/<file>"
)
VAE_HELP = (
    "the Wan2.2 VAE: Wan2.2_VAE.pth from Wan-AI/Wan2.2-TI2V-5B, or wan2.2_vae.safetensors from "
    "Comfy-Org/Wan_2.2_ComfyUI_Repackaged (split_files/vae/). Put it in models/vae/ and pass "
    "--vae models/vae/wan2.2_vae.safetensors. Wan2.1 students take the Wan2.1 VAE instead: Wan2.1_VAE.pth from "
    "Wan-AI/Wan2.1-T2V-1.3B, or wan_2.1_vae.safetensors from Comfy-Org/Wan_2.1_ComfyUI_repackaged (split_files/vae/)"
)
PROMPT_HELP = (
    "prompt features, either --prompt-embeds FILE.safetensors (write one once, on any machine with the encoder: "
    "python -m chameleon_core.text --encoder DIR --prompt \"...\" --out FILE.safetensors) or --prompt TEXT "
    "--text-encoder DIR, where DIR is a local HuggingFace-format umT5-XXL folder: a copy of google/umt5-xxl, or "
    "the text_encoder/ and tokenizer/ folders of Wan-AI/Wan2.2-TI2V-5B-Diffusers (needs: pip install transformers "
    "sentencepiece protobuf)"
)


class MissingFilesError(FileNotFoundError):
    """Weights or inputs are missing; the message lists every one and where to get it."""


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
    t = p.add_argument_group("prompt (random features with --random if none is given)")
    t.add_argument("--prompt-embeds", type=Path, metavar="FILE",
                   help="prompt features, a .safetensors from python -m chameleon_core.text")
    t.add_argument("--prompt", metavar="TEXT", help="prompt text, encoded with --text-encoder")
    t.add_argument("--text-encoder", type=Path, metavar="DIR", help="local HuggingFace-format umT5-XXL folder")
    v = p.add_argument_group("video")
    v.add_argument("--reference", type=Path, required=True, metavar="IMG", help="the person image")
    v.add_argument("--garment", type=Path, required=True, metavar="IMG", help="the first garment image")
    v.add_argument("--switch", action="append", default=[], metavar="FRAME:IMAGE",
                   help="switch to the garment IMAGE at video frame FRAME (rounded up to a chunk boundary); repeatable")
    v.add_argument("--prompt-switch", action="append", default=[], metavar="FRAME:EMBEDS",
                   help="switch to the prompt features in EMBEDS (.safetensors) at video frame FRAME; repeatable")
    v.add_argument("--frames", type=int, default=81, help="output video frames, rounded up to whole chunks (81)")
    v.add_argument("--width", type=int, default=704, help="pixels, a multiple of 32 for Wan2.2 models (704)")
    v.add_argument("--height", type=int, default=1280, help="pixels, a multiple of 32 for Wan2.2 models (1280)")
    v.add_argument("--seed", type=int, default=0, help="noise seed; the same seed gives the same frames (0)")
    s = p.add_argument_group("stream and switches")
    s.add_argument("--steps", type=int, default=4, help="denoising steps per chunk (4)")
    s.add_argument("--chunk-frames", type=int, default=3, help="latent frames per chunk (3)")
    s.add_argument("--cache-frames", type=int, default=23,
                   help="KV cache length in latent frames: 2 conditions + sink + history (23)")
    s.add_argument("--sink-chunks", type=int, default=1, help="chunks kept as the attention sink (1)")
    s.add_argument("--no-refresh", action="store_true", help="ablation: keep the old garment's KV at a switch")
    s.add_argument("--no-withdraw", action="store_true", help="ablation: keep the history KV at a switch")
    s.add_argument("--no-disentangle", action="store_true", help="ablation: keep the original reference KV")
    s.add_argument("--keep-sink", action="store_true", help="withdraw the history but keep the sink")
    r = p.add_argument_group("runtime and output")
    r.add_argument("--dtype", choices=[*DTYPES, "fp8"], default=None,
                   help="compute dtype; fp8 = bf16 compute with fp8 block weights (bf16 on CUDA, fp32 on CPU)")
    r.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (cuda if available)")
    r.add_argument("--out", type=Path, default=Path("chameleon_out"), metavar="PATH",
                   help="*.mp4 (needs PyAV: pip install av), or a folder for frame_00000.png ... (chameleon_out)")
    r.add_argument("--fps", type=float, default=24.0, help="frame rate of the mp4 (24)")
    r.add_argument("--json", type=Path, metavar="FILE", help="also write the timing summary here")
    r.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks of errors")
    return p


# -------------------------------------------------------------------------------------------------------------------
# 2. Checks before anything heavy is loaded
# -------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchEvent:
    """One switch on the timeline, placed on a chunk boundary."""

    kind: str
    """``garment`` or ``prompt``."""
    requested_frame: int
    """The video frame the user asked for."""
    source: Path
    """The garment image or prompt-embeddings file."""
    chunk: int
    """Chunks generated before the switch."""
    frame: int
    """First video frame generated after the switch (the chunk boundary the request was rounded up to)."""
    payload: torch.Tensor | None = field(default=None, repr=False)
    """The fitted garment image ``[1, H, W, 3]`` or the prompt features ``[1, L, D]``, filled in by steps 3-4."""


@dataclass(frozen=True)
class SwitchOptions:
    """The three rescheduling operations of a garment switch (each separately switchable, for ablations)."""

    refresh: bool
    withdraw: bool
    disentangle: bool
    withdraw_sink: bool


@dataclass(frozen=True)
class RunPlan:
    """Everything decided from the arguments and file headers, before weights are read."""

    config: WanConfig
    """The transformer's architecture (from the checkpoint's headers, or the --random preset)."""
    stream: StreamSettings
    width: int
    height: int
    chunks: int
    """Chunks to generate."""
    events: tuple[SwitchEvent, ...]
    """Switches in timeline order (garment before prompt at one boundary)."""
    options: SwitchOptions
    device: torch.device
    dtype: torch.dtype
    """Compute dtype (bf16 for fp8)."""
    fp8: bool
    out: Path
    mp4: bool

    @property
    def family(self) -> LatentFamily:
        return self.config.latent

    @property
    def latent_frames(self) -> int:
        return self.chunks * self.stream.chunk_frames

    @property
    def video_frames(self) -> int:
        return self.family.pixel_frames(self.latent_frames)


def chunk_start_frame(chunk: int, chunk_frames: int, family: LatentFamily) -> int:
    """First output video frame of chunk ``chunk`` (0-based). Latent frame 0 is video frame 0 alone, latent frame
    j >= 1 is video frames 4j-3 .. 4j, so chunk k >= 1 starts where ``k * chunk_frames`` latent frames end."""
    return 0 if chunk == 0 else family.pixel_frames(chunk * chunk_frames)


def landing_chunk(frame: int, chunk_frames: int, family: LatentFamily) -> int:
    """The first chunk boundary (chunk index >= 1) whose start frame is at or after video frame ``frame``."""
    first_latent = 1 + math.ceil((frame - 1) / family.temporal_stride)  # smallest j with pixel_frames(j) >= frame
    return max(1, math.ceil(first_latent / chunk_frames))


def parse_switch(spec: str, option: str, what: str) -> tuple[int, Path]:
    """``"12:garment2.png"`` -> ``(12, Path("garment2.png"))``; the path may itself contain colons."""
    frame, sep, path = spec.partition(":")
    if not sep or not path or not frame.strip().lstrip("-").isdigit():
        example = "garment2.png" if what == "IMAGE" else "prompt2.safetensors"
        raise ValueError(f"{option} {spec!r} is not FRAME:{what}; write it as e.g. {option} 12:{example}")
    n = int(frame)
    if n < 1:
        raise ValueError(
            f"{option} {spec!r}: FRAME must be >= 1 (a video frame after the start), got {n}; to start with this "
            f"{'garment use --garment' if option == '--switch' else 'prompt use --prompt-embeds'}"
        )
    return n, Path(path)


def _why_missing(path: Path | None) -> str | None:
    if path is None:
        return "not given"
    return None if path.exists() else f"not found: {path} (absolute: {path.resolve()})"


def _item(text: str) -> str:
    """One entry of the missing-files list, wrapped for a terminal (paths and names never broken)."""
    return textwrap.fill(text, width=110, initial_indent="  - ", subsequent_indent="    ", break_long_words=False,
                         break_on_hyphens=False)


def missing_weights(args: argparse.Namespace) -> list[str]:
    """One line per missing weight file (student, VAE, prompt source), each saying what to get and where."""
    wanted: list[tuple[str, Path | None, str]] = []
    if not args.random:
        wanted += [("--student", args.student, STUDENT_HELP), ("--vae", args.vae, VAE_HELP)]
    if args.prompt_embeds:
        wanted.append(("--prompt-embeds", args.prompt_embeds, PROMPT_HELP))
    elif args.prompt is not None:
        wanted.append(("--text-encoder", args.text_encoder, PROMPT_HELP))
    elif not args.random:  # --random makes up prompt features when none are given
        wanted.append(("prompt", None, PROMPT_HELP))
    return [_item(f"{option} ({why}): {help_}") for option, path, help_ in wanted if (why := _why_missing(path))]


def missing_inputs(args: argparse.Namespace) -> list[str]:
    """One line per missing image or prompt-switch file."""
    given = [("--reference", args.reference), ("--garment", args.garment)]
    given += [("--switch", parse_switch(s, "--switch", "IMAGE")[1]) for s in args.switch]
    given += [("--prompt-switch", parse_switch(s, "--prompt-switch", "EMBEDS")[1]) for s in args.prompt_switch]
    return [_item(f"{option}: {why}") for option, path in given if (why := _why_missing(path))]


def check_files(args: argparse.Namespace) -> None:
    """Raise :class:`MissingFilesError` listing every missing file at once (weights with where to get them)."""
    if args.random and (args.student or args.vae):
        raise ValueError("--random replaces the weight files; pass either --random PRESET or --student/--vae")
    if args.prompt_embeds and (args.prompt is not None or args.text_encoder):
        raise ValueError("give the prompt once: --prompt-embeds FILE, or --prompt TEXT with --text-encoder DIR")
    if args.text_encoder and args.prompt is None:
        raise ValueError(f"--text-encoder {args.text_encoder} needs the text to encode: add --prompt \"...\"")
    weights, inputs = missing_weights(args), missing_inputs(args)
    if weights:
        head = "missing weight files. Get these and pass their paths (or run without weights: --random tiny):"
        raise MissingFilesError("\n".join([head, *weights, *inputs]))
    if inputs:
        raise MissingFilesError("\n".join(["missing input files:", *inputs]))


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a device ({e}); use cuda, cuda:0 or cpu") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this torch build sees no CUDA device; use --device cpu")
    return device


def model_config(args: argparse.Namespace) -> WanConfig:
    """The transformer's architecture from the checkpoint headers (no weights read) or the --random preset."""
    if args.random:
        return preset(args.random)
    info = inspect_checkpoint(args.student)
    if checkpoint_kind(args.student) == "teacher":
        logger.warning(
            "%s looks like a bidirectional teacher, not a causal student (no student metadata, training file or "
            "student-like name); streamed with %d steps it gives poor frames. Pass a causal student checkpoint",
            args.student, args.steps,
        )
    return info.config


def plan_switches(
    args: argparse.Namespace, chunks: int, chunk_frames: int, family: LatentFamily
) -> tuple[SwitchEvent, ...]:
    """Place every --switch / --prompt-switch on the first chunk boundary at or after its frame."""
    events = []
    for option, kind, what, specs in (("--switch", "garment", "IMAGE", args.switch),
                                      ("--prompt-switch", "prompt", "EMBEDS", args.prompt_switch)):
        for spec in specs:
            frame, path = parse_switch(spec, option, what)
            chunk = landing_chunk(frame, chunk_frames, family)
            landed = chunk_start_frame(chunk, chunk_frames, family)
            end = family.pixel_frames(chunks * chunk_frames)
            if chunk >= chunks:
                boundaries = [chunk_start_frame(k, chunk_frames, family) for k in range(1, chunks)]
                raise ValueError(
                    f"{option} {spec!r}: frame {frame} rounds up to the chunk boundary at frame {landed}, but the "
                    f"video has {end} frames; use --frames {family.pixel_frames(chunk * chunk_frames + 1)} or more, or "
                    f"switch earlier (boundaries: {boundaries})"
                )
            events.append(SwitchEvent(kind, frame, path, chunk, landed))
    order = {"garment": 0, "prompt": 1}  # a prompt switch re-caches what the garment switch kept: run it second
    events.sort(key=lambda e: (e.chunk, order[e.kind]))
    for a, b in zip(events, events[1:]):
        if (a.chunk, a.kind) == (b.chunk, b.kind):
            raise ValueError(
                f"two {a.kind} switches (frames {a.requested_frame} and {b.requested_frame}) land on the same chunk "
                f"boundary (frame {a.frame}), so the first would never be seen; move one to another chunk"
            )
    for e in events:
        note = "" if e.frame == e.requested_frame else f" (rounded up from frame {e.requested_frame})"
        logger.info("%s switch to %s lands at video frame %d%s, after %d chunks", e.kind, e.source.name, e.frame,
                    note, e.chunk)
    return tuple(events)


def check_output(out: Path) -> bool:
    """True for an mp4; checks that PyAV is there, or that a frames folder holds no frames of an earlier run."""
    if out.suffix.lower() == ".mp4":
        try:
            import av  # noqa: F401
        except ImportError:
            raise ValueError(
                f"--out {out} asks for an mp4, which needs PyAV (not installed); pip install av, or pass a folder to "
                "--out to write PNG frames"
            ) from None
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; pass a file name ending in .mp4 or a folder without .mp4")
        if out.exists():
            logger.info("%s exists and will be replaced", out)
        return True
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file; pass a folder for PNG frames, or a *.mp4 file name")
    old = sorted(out.glob("frame_*.png")) if out.is_dir() else []
    if old:
        raise ValueError(
            f"--out folder {out} already holds {len(old)} frame_*.png files from an earlier run; pass a new folder "
            "or delete them, so that frames of two runs are not mixed"
        )
    return False


def plan_run(args: argparse.Namespace) -> RunPlan:
    """Check every argument and file header; the weights themselves are not read."""
    check_files(args)
    for name in ("frames", "width", "height", "steps", "fps"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name} must be positive, got {getattr(args, name)}")
    device = resolve_device(args.device)
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    stream = StreamSettings(chunk_frames=args.chunk_frames, cache_frames=args.cache_frames, sink_chunks=args.sink_chunks,
                            steps=args.steps)
    config = model_config(args)
    family = config.latent
    config.latent_grid(args.height, args.width)  # raises a ValueError naming a usable size
    c = stream.chunk_frames
    latent = family.latent_frames(args.frames)
    if latent < c:
        raise ValueError(
            f"--frames {args.frames} is {latent} latent frame(s), less than one chunk ({c} latent frames = "
            f"{family.pixel_frames(c)} video frames); use --frames {family.pixel_frames(c)} or more"
        )
    chunks = math.ceil(latent / c)
    if family.pixel_frames(chunks * c) != args.frames:
        logger.info("--frames %d -> %d video frames (%d chunks of %d latent frames)", args.frames,
                    family.pixel_frames(chunks * c), chunks, c)
    return RunPlan(
        config=config,
        stream=stream,
        width=args.width,
        height=args.height,
        chunks=chunks,
        events=plan_switches(args, chunks, c, family),
        options=SwitchOptions(not args.no_refresh, not args.no_withdraw, not args.no_disentangle, not args.keep_sink),
        device=device,
        dtype=DTYPES["bf16" if dtype_name == "fp8" else dtype_name],
        fp8=dtype_name == "fp8",
        out=args.out,
        mp4=check_output(args.out),
    )


# -------------------------------------------------------------------------------------------------------------------
# 3. Images
# -------------------------------------------------------------------------------------------------------------------


def load_fitted(path: Path, plan: RunPlan, garment: bool) -> torch.Tensor:
    """An image file fitted to the video size as in training: ``[1, H, W, 3]`` in 0..1."""
    from PIL import UnidentifiedImageError

    try:
        image = load_image(path)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read the image {path} ({e}); pass a PNG, JPEG or WebP file") from None
    return (fit_garment if garment else fit_reference)(image, plan.width, plan.height)


# -------------------------------------------------------------------------------------------------------------------
# 4. Prompt features
# -------------------------------------------------------------------------------------------------------------------


def check_context(context: torch.Tensor, config: WanConfig, source: str) -> torch.Tensor:
    """Prompt features ``[1, L, D]`` that fit the model (``D == text_dim``, ``L <= text_len``)."""
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
                else load_embeddings(e.source, plan.config))
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
        name = f"{family}-tiny" if plan.config.name == "tiny" else family
        logger.info("random %s VAE (preset %s)", family, name)
        vae = build_vae(name, device=plan.device, dtype=plan.dtype, seed=0)
    else:
        vae = load_vae(args.vae, device=plan.device, dtype=plan.dtype)
    check_vae_matches(vae, plan.config.in_dim)
    return vae


def load_model(args: argparse.Namespace, plan: RunPlan) -> WanModel:
    if args.random:
        logger.info("random %s transformer", plan.config.name)
        model = random_transformer(plan.config, device=str(plan.device), dtype=plan.dtype, seed=0)
    else:
        model = load_transformer(args.student, dtype=plan.dtype, device=plan.device)
    if plan.fp8:
        quantize_blocks_fp8_(model, plan.dtype)
    return model.requires_grad_(False)


# -------------------------------------------------------------------------------------------------------------------
# 7. Streaming: generate, decode each chunk at once, switch at boundaries
# -------------------------------------------------------------------------------------------------------------------


class FrameWriter(Protocol):
    count: int
    """Frames written so far."""

    def write(self, frames: np.ndarray) -> None:
        """frames: ``[F, H, W, 3]`` uint8."""
        ...

    def close(self) -> None: ...


class FrameFolder:
    """Writes ``frame_00000.png`` ... as frames arrive."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.count = 0

    def write(self, frames: np.ndarray) -> None:
        from PIL import Image

        for frame in frames:
            Image.fromarray(frame).save(self.folder / FRAME_PATTERN.format(self.count))
            self.count += 1

    def close(self) -> None:
        pass


class Mp4File:
    """Encodes frames into an H.264 mp4 (PyAV) as they arrive, so no video is held in memory."""

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "18"}
        self.count = 0

    def write(self, frames: np.ndarray) -> None:
        import av

        for frame in frames:
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self.container.mux(packet)
            self.count += 1

    def close(self) -> None:
        for packet in self.stream.encode():  # flush the encoder
            self.container.mux(packet)
        self.container.close()


@contextlib.contextmanager
def open_output(plan: RunPlan, fps: float) -> Iterator[FrameWriter]:
    """The writer for ``plan.out``; closed (the mp4 finalised) even when the run stops early."""
    writer = Mp4File(plan.out, fps, plan.width, plan.height) if plan.mp4 else FrameFolder(plan.out)
    try:
        yield writer
    finally:
        writer.close()


def to_uint8_frames(pixels: torch.Tensor) -> np.ndarray:
    """Decoded pixels ``[1, 3, F, H, W]`` in [-1, 1] -> ``[F, H, W, 3]`` uint8."""
    frames = ((pixels[0].float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)  # [3, F, H, W]
    return frames.permute(1, 2, 3, 0).cpu().numpy()


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
        if e.kind == "prompt":
            switch = PromptSwitch(e.payload, label=str(e.source))
        else:
            switch = GarmentSwitch(e.payload, refresh=opts.refresh, withdraw=opts.withdraw,
                                   disentangle=opts.disentangle, withdraw_sink=opts.withdraw_sink, label=str(e.source))
        out.append(TimedSwitch(e.chunk, switch))
    return out


def run_stream(state: StreamState, plan: RunPlan, vae: WanVAE, writer: FrameWriter) -> Timings:
    """The session loop: each chunk decoded and written as soon as it is made, switches at their boundaries."""
    timings = Timings()
    requested = {(e.chunk, e.kind): e.requested_frame for e in plan.events}
    for chunk in Session(state, chunks=plan.chunks, codec=vae, timeline=timeline(plan)):
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
        f"FashionChameleon stream: {s['model']}, {s['width']}x{s['height']}, {s['dtype']} on {s['device']}",
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
    # 3. Images, fitted to the video size (reference: cover-crop; garments: contain + white pad).
    reference = load_fitted(args.reference, plan, garment=False)
    garment = load_fitted(args.garment, plan, garment=True)
    plan = attach_payloads(args, plan)
    # 4. Prompt features (the umT5 encoder, if used, is freed before the transformer loads).
    context = prompt_features(args, plan)
    # 5. Weights: the VAE first, so a mismatched VAE fails before the large transformer loads.
    vae = load_vae_for(args, plan)
    model = load_model(args, plan)
    # 6. Condition latents, in the model's latent space.
    size = (plan.width, plan.height)
    ref_latent = encode_condition(vae, plan.family, reference, garment=False, size=size)
    garment_latent = encode_condition(vae, plan.family, garment, garment=True, size=size)
    # 7. Stream.
    logger.info("streaming %d chunks = %d video frames at %dx%d", plan.chunks, plan.video_frames, plan.width,
                plan.height)
    state = start_stream(model, context=context, reference=ref_latent, garment=garment_latent, seed=args.seed,
                         settings=plan.stream)
    with open_output(plan, args.fps) as writer:
        timings = run_stream(state, plan, vae, writer)
        frames = writer.count
    # 8. Summary.
    name = f"{plan.config.name} (random weights)" if args.random else str(args.student)
    return summarize(plan, timings, frames, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m chameleon_core``; returns the exit code (2 for user errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed usage and the error (or the help)
        return int(e.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        logger.debug("details of the error below", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NonFiniteChunkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; the frames written so far are in {args.out}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_summary(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
