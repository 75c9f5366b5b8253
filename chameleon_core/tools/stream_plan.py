"""Checks of a command-line stream before anything heavy is loaded: files, sizes, frame counts, switch points, output.

Part of ``python -m chameleon_core`` (:mod:`chameleon_core.tools.stream`). Everything the user gave is checked here,
from the arguments and file headers alone, so a wrong path or size fails in a second with one message, never after
the weights have loaded. Frame arithmetic (Wan VAEs, 4x temporal): latent frame 0 is video frame 0, latent frame
j >= 1 is video frames 4j-3 .. 4j; a switch lands on the first chunk boundary at or after its frame.
"""

from __future__ import annotations

import argparse
import logging
import math
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..checkpoints import checkpoint_kind, inspect_checkpoint
from ..config import StreamSettings, WanConfig, preset
from ..profiles import StreamProfile, resolve_profile
from ..frames import landing_chunk, latent_frames_covering, stream_video_frames
from ..latents import LatentFamily
from ..memory import (
    MAX_SIDE,
    MAX_VIDEO_FRAMES,
    check_stream_memory,
    estimate_stream_memory,
)

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
"""Compute dtypes; ``fp8`` is bf16 compute with the block weights stored in fp8 (:mod:`chameleon_core.quant`)."""

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
    "python -m chameleon_core.tools.prompt_embeds --encoder DIR --prompt \"...\" --out FILE.safetensors) or --prompt TEXT "
    "--text-encoder DIR, where DIR is a local HuggingFace-format umT5-XXL folder: a copy of google/umt5-xxl, or "
    "the text_encoder/ and tokenizer/ folders of Wan-AI/Wan2.2-TI2V-5B-Diffusers (needs: pip install transformers "
    "sentencepiece protobuf)"
)


class MissingFilesError(FileNotFoundError):
    """Weights or inputs are missing; the message lists every one and where to get it."""


# -------------------------------------------------------------------------------------------------------------------
# 2. Checks before anything heavy is loaded
# -------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchEvent:
    """One switch on the timeline, placed on a chunk boundary."""

    kind: str
    """``garment``, ``prompt``, or ``shot`` (a prompt switch that starts a new shot: LongLive 2.0)."""
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

    @property
    def new_clip(self) -> bool:
        """A garment switch withdraws every video frame, so the stream starts a new clip there (its first latent
        frame not shown: :mod:`chameleon_core.frames`)."""
        return self.withdraw and self.withdraw_sink


@dataclass(frozen=True)
class RunPlan:
    """Everything decided from the arguments and file headers, before weights are read."""

    config: WanConfig
    """The transformer's architecture (from the checkpoint's headers, or the --random preset)."""
    profile: StreamProfile
    """The student's stream profile (its loop: chunk, window, sink, steps, conditions)."""
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
    fps: float = 24.0
    """Frame rate of the output video (the profile's unless --fps is given)."""

    @property
    def family(self) -> LatentFamily:
        return self.config.latent

    @property
    def latent_frames(self) -> int:
        return self.chunks * self.stream.chunk_frames

    @property
    def clip_starts(self) -> tuple[int, ...]:
        """Latent frames where a garment switch starts a new clip."""
        return clip_starts_of(self.events, self.options, self.stream.chunk_frames)

    @property
    def video_frames(self) -> int:
        return stream_video_frames(0, self.latent_frames, self.clip_starts, stride=self.family.temporal_stride)


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
    given = [(o, p) for o, p in (("--reference", args.reference), ("--garment", args.garment),
                                 ("--image", getattr(args, "image", None))) if p is not None]
    given += [("--switch", parse_switch(s, "--switch", "IMAGE")[1]) for s in args.switch]
    given += [("--prompt-switch", parse_switch(s, "--prompt-switch", "EMBEDS")[1]) for s in args.prompt_switch]
    given += [("--shot-switch", parse_switch(s, "--shot-switch", "EMBEDS")[1])
              for s in getattr(args, "shot_switch", [])]
    if getattr(args, "decoder", None) not in (None, "random"):
        given.append(("--decoder", Path(args.decoder)))
    return [_item(f"{option}: {why}") for option, path in given if (why := _why_missing(path))]


def check_files(args: argparse.Namespace) -> None:
    """Raise :class:`MissingFilesError` listing every missing file at once (weights with where to get them)."""
    if args.random and (args.student or args.vae or getattr(args, "lora", None)):
        raise ValueError("--random replaces the weight files; pass either --random PRESET or --student/--vae/--lora")
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
            "student-like name); streamed with a few steps it gives poor frames. Pass a causal student checkpoint",
            args.student,
        )
    return info.config


def clip_starts_of(events, options: SwitchOptions, chunk_frames: int) -> tuple[int, ...]:
    """Latent frames where the garment switches among ``events`` start a new clip (none unless they withdraw every
    video frame)."""
    if not options.new_clip:
        return ()
    return tuple(sorted({e.chunk * chunk_frames for e in events if e.kind == "garment" and e.chunk > 0}))


def plan_switches(
    args: argparse.Namespace, chunks: int, chunk_frames: int, family: LatentFamily, options: SwitchOptions
) -> tuple[SwitchEvent, ...]:
    """Place every --switch / --prompt-switch on the first chunk boundary at or after its frame, counting the frames
    as the stream shows them (a garment switch that starts a new clip, ``options.new_clip``, shows one latent frame
    less after it, so later boundaries sit a latent frame earlier in the video)."""
    specs_in_order = []
    for option, kind, what, specs in (("--switch", "garment", "IMAGE", args.switch),
                                      ("--prompt-switch", "prompt", "EMBEDS", args.prompt_switch),
                                      ("--shot-switch", "shot", "EMBEDS", getattr(args, "shot_switch", []))):
        for spec in specs:
            frame, path = parse_switch(spec, option, what)
            specs_in_order.append((frame, kind != "garment", option, kind, spec, path))
    specs_in_order.sort(key=lambda x: x[:2])
    events: list[SwitchEvent] = []
    stride = family.temporal_stride

    def frame_at(k: int) -> int:  # the first video frame after chunk boundary k, with the switches placed so far
        return stream_video_frames(0, k * chunk_frames, clip_starts_of(events, options, chunk_frames), stride=stride)

    for frame, _, option, kind, spec, path in specs_in_order:
        chunk = max(1, landing_chunk(frame, chunk_frames, stride=stride))
        while frame_at(chunk) < frame:
            chunk += 1
        landed = frame_at(chunk)
        if chunk >= chunks:
            boundaries = [frame_at(k) for k in range(1, chunks)]
            raise ValueError(
                f"{option} {spec!r}: frame {frame} rounds up to the chunk boundary at frame {landed}, but the "
                f"video has {frame_at(chunks)} frames; use --frames {landed + 1} or more, or switch earlier "
                f"(boundaries: {boundaries})"
            )
        events.append(SwitchEvent(kind, frame, path, chunk, landed))
    order = {"garment": 0, "prompt": 1, "shot": 1}  # a prompt switch re-caches what a garment switch kept: second
    events.sort(key=lambda e: (e.chunk, order[e.kind]))
    for a, b in zip(events, events[1:]):
        if (a.chunk, order[a.kind]) == (b.chunk, order[b.kind]):
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


SEED_RANGE = (0, 2**63 - 1)
"""Seeds torch.Generator.manual_seed takes (non-negative here, so that a seed names one stream)."""


def check_numbers(args: argparse.Namespace) -> None:
    """Every number on the command line is finite and in range, before anything loads (``--fps nan`` included)."""
    for name in ("frames", "width", "height", "steps", "chunk_frames", "cache_frames"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.fps is not None and (not math.isfinite(args.fps) or not 0 < args.fps <= 1000):
        raise ValueError(f"--fps must be a finite frame rate in (0, 1000], got {args.fps}; use e.g. --fps 24")
    if args.sink_chunks is not None and args.sink_chunks < 0:
        raise ValueError(f"--sink-chunks must be >= 0, got {args.sink_chunks}")
    if args.width is not None and args.height is not None and max(args.width, args.height) > MAX_SIDE:
        raise ValueError(
            f"--width {args.width} --height {args.height}: at most {MAX_SIDE} pixels a side; the model is trained at "
            "--width 704 --height 1280"
        )
    if args.frames > MAX_VIDEO_FRAMES:
        raise ValueError(f"--frames {args.frames} is more than {MAX_VIDEO_FRAMES} frames; stream a shorter video")
    low, high = SEED_RANGE
    if not low <= args.seed <= high:
        raise ValueError(f"--seed {args.seed} is out of range: a seed is a whole number in {low}..{high}; pick a smaller one")


def check_plan_memory(config: WanConfig, stream: StreamSettings, width: int, height: int, device: torch.device,
                      dtype: torch.dtype, *, fp8: bool = False) -> None:
    """Refuse a run whose weights, KV cache copies, activations and VAE decode do not fit the device's free memory
    (:mod:`chameleon_core.memory`), before anything is loaded."""
    from ..model import WanModel
    from ..vae import VAE_PRESETS

    family = config.latent
    with torch.device("meta"):
        params = sum(p.numel() for p in WanModel(config).parameters())
    weights = params * (1 if fp8 else torch.empty((), dtype=dtype).element_size())
    lh, lw = family.latent_size(height, width)
    vae = VAE_PRESETS.get(f"{family.name}-tiny" if config.name.startswith("tiny") else family.name)
    estimate = estimate_stream_memory(config, stream, config.tokens_per_frame(height, width), dtype=dtype,
                                      device=device, vae_config=vae, latent_size=(lh, lw))
    estimate = replace(estimate, weight_bytes=weights)
    check_stream_memory(estimate, device, what=f"--width {width} --height {height} --cache-frames "
                        f"{stream.cache_frames} with {config.name} ({params / 1e9:.2f}B parameters)")


STREAM_OPTIONS = ("chunk_frames", "cache_frames", "sink_chunks", "steps")
"""Command-line stream settings that override the profile's."""


def plan_profile(args: argparse.Namespace) -> tuple[StreamProfile, str]:
    """The stream profile: ``--profile`` by name, or (``auto``) the one the student checkpoint names."""
    requested = getattr(args, "profile", "auto") or "auto"
    return resolve_profile(requested, None if args.random else args.student)


def check_inputs_fit(args: argparse.Namespace, prof: StreamProfile) -> None:
    """The images and switches given are the ones the profile takes (conditions or not, first frame, shots)."""
    image = getattr(args, "image", None)
    if prof.conditions:
        missing = [o for o, v in (("--reference", args.reference), ("--garment", args.garment)) if v is None]
        if missing:
            raise ValueError(f"the {prof.name} profile streams a person in a garment: give {' and '.join(missing)} "
                             "(or pick a public student's profile with --profile)")
        if image is not None:
            raise ValueError(f"--image is the first frame of an image-to-video profile; the {prof.name} profile takes "
                             "--reference and --garment instead")
        return
    given = [o for o, v in (("--reference", args.reference), ("--garment", args.garment)) if v is not None]
    if given or args.switch:
        raise ValueError(
            f"the {prof.name} profile ({prof.title}) streams text-to-video without a person or garment: drop "
            f"{', '.join(given + (['--switch'] if args.switch else []))}"
            + ("; give --image for image-to-video" if prof.image_to_video else "")
        )
    if image is not None and not prof.image_to_video:
        raise ValueError(f"the {prof.name} profile is text-to-video only: drop --image (longlive2 takes a first frame)")
    if getattr(args, "shot_switch", None) and not (prof.settings.shot_rope_offset or prof.settings.shot_sink):
        raise ValueError(f"--shot-switch starts a new shot, which the {prof.name} profile does not have (longlive2 "
                         "does); use --prompt-switch")


def plan_run(args: argparse.Namespace) -> RunPlan:
    """Check every argument and file header; the weights themselves are not read."""
    check_files(args)
    check_numbers(args)
    device = resolve_device(args.device)
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    config = model_config(args)
    prof, why = plan_profile(args)
    logger.info("stream profile %s (%s)", prof.name, why)
    check_inputs_fit(args, prof)
    width = args.width if args.width is not None else prof.native_size[0]
    height = args.height if args.height is not None else prof.native_size[1]
    check_numbers(replace_namespace(args, width=width, height=height))
    family = config.latent
    config.latent_grid(height, width)  # raises a ValueError naming a usable size
    # The session hands each chunk to the writer: the state need not keep every chunk (flat host memory).
    overrides = {k: getattr(args, k) for k in STREAM_OPTIONS if getattr(args, k) is not None}
    stream = prof.settings_for(config.tokens_per_frame(height, width), keep_history=False, **overrides)
    c = stream.chunk_frames
    if args.frames < family.video_frames(c):
        raise ValueError(
            f"--frames {args.frames} is less than one chunk ({c} latent frames = {family.video_frames(c)} video "
            f"frames); use --frames {family.video_frames(c)} or more"
        )
    latent = latent_frames_covering(args.frames, stride=family.temporal_stride)
    chunks = math.ceil(latent / c)
    if family.video_frames(chunks * c) > MAX_VIDEO_FRAMES:  # rounding up to whole chunks adds frames
        most = family.video_frames(family.latent_frames(MAX_VIDEO_FRAMES) // c * c)
        raise ValueError(
            f"--frames {args.frames} rounds up to {family.video_frames(chunks * c)} video frames (whole chunks of {c} "
            f"latent frames), more than the limit of {MAX_VIDEO_FRAMES}; use --frames {most} or fewer"
        )
    if family.video_frames(chunks * c) != args.frames:
        logger.info("--frames %d -> %d video frames (%d chunks of %d latent frames)", args.frames,
                    family.video_frames(chunks * c), chunks, c)
    options = SwitchOptions(not args.no_refresh, not args.no_withdraw, not args.no_disentangle, not args.keep_sink)
    events = plan_switches(args, chunks, c, family, options)
    clips = clip_starts_of(events, options, c)

    def shown_for(frames: int) -> tuple[int, int]:  # (chunks, video frames shown) for at least ``frames`` shown
        k = math.ceil(latent_frames_covering(frames, stride=family.temporal_stride) / c)
        while stream_video_frames(0, k * c, clips, stride=family.temporal_stride) < frames:
            k += 1  # a garment switch that starts a new clip shows one latent frame less after it
        return k, stream_video_frames(0, k * c, clips, stride=family.temporal_stride)

    chunks, shown = shown_for(args.frames)
    if shown > MAX_VIDEO_FRAMES:  # only a new clip's extra chunk gets here (the plain rounding was checked above)
        most = next(f for f in range(MAX_VIDEO_FRAMES, 0, -1) if shown_for(f)[1] <= MAX_VIDEO_FRAMES)
        raise ValueError(
            f"--frames {args.frames} with {len(clips)} garment switch(es) that start a new clip rounds up to "
            f"{shown} video frames ({chunks} chunks), more than the limit of {MAX_VIDEO_FRAMES}; use --frames "
            f"{most} or fewer"
        )
    if clips:
        logger.info("%d garment switch(es) start a new clip (the first latent frame after each is not shown): %d "
                    "chunks = %d video frames", len(clips), chunks, shown)
    check_plan_memory(config, stream, width, height, device, DTYPES["bf16" if dtype_name == "fp8" else
                                                                  dtype_name], fp8=dtype_name == "fp8")
    return RunPlan(
        config=config,
        profile=prof,
        stream=stream,
        width=width,
        height=height,
        chunks=chunks,
        events=events,
        options=options,
        device=device,
        dtype=DTYPES["bf16" if dtype_name == "fp8" else dtype_name],
        fp8=dtype_name == "fp8",
        out=args.out,
        mp4=check_output(args.out),
        fps=float(args.fps if args.fps is not None else prof.fps),
    )


def replace_namespace(args: argparse.Namespace, **changes) -> argparse.Namespace:
    """A copy of ``args`` with ``changes``."""
    return argparse.Namespace(**{**vars(args), **changes})
