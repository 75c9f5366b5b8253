"""``python -m chameleon_core.eval hgc``: score generated videos HGC-Bench style, per video and averaged.

HGC-Bench (huggingface.co/datasets/QuanjianSong/HGC-Bench, 240 samples) ships ``meta_data.csv``; the authors'
inference scripts (``predictor/*_infer_ic.py`` in QuanjianSong/FashionChameleon) read its columns ``prompt`` (a
caption JSON whose ``caption.en_short`` is the prompt), ``src_image`` (the reference person) and ``cloth_image``
(the garment), and write one video per row as ``output_{row index}.mp4``. Those are the defaults here; every column
name and the video naming are options (``--prompt-column`` ..., ``--video-pattern``, ``--video-column``), because
only the columns the scripts read are known, not the file's full layout. Image paths are taken as given when
absolute, else relative to ``--data-root`` (default: the CSV's folder; ``infer_ic.py`` joins them so), else to the
working directory (``stream_infer_ic.py`` uses them as given).

The paper's exact metric implementations are not published, so the metrics are defined here, per dimension:

================  ==========================================================================================
dimension         metrics (higher is better unless marked)
================  ==========================================================================================
identity          ``face_similarity``: ArcFace cosine, reference face vs each sampled frame's largest face
                  (``face_found``: share of sampled frames with a face); ``reference_clip`` /
                  ``reference_dino``: CLIP / DINOv2 cosine, reference image vs sampled frames
motion            ``motion_pct_diagonal`` (mean optical-flow magnitude per frame, % of the frame diagonal),
                  ``motion_px`` / ``motion_top_px`` at the measured size (neither is "better")
smoothness        ``smoothness`` (1 - flow-interpolation error of each inner frame), ``warp_error`` (lower)
image quality     ``aesthetic`` (LAION predictor, ~1..10), ``sharpness`` (Laplacian variance; weight-free proxy)
garment           ``garment_clip`` / ``garment_dino``: CLIP / DINOv2 cosine, garment image (padded white to a
                  square, as the authors pad it) vs sampled whole frames (no segmentation model is used)
================  ==========================================================================================

The flow metrics (:mod:`.flow`) run on every frame shrunk to ``--flow-size`` on its longer side; the model metrics
on every ``--frame-stride``-th frame at full size. A model that is not given is skipped with one message naming the
file and where to get it (:mod:`.feature_models`); one given explicitly but missing is an error (exit code 2).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints.errors import CheckpointError, check_regular_file
from ..tools.command import check_output_file, parse_args, run_command
from .feature_models import (
    MODEL_SOURCES,
    AestheticPredictor,
    FaceEmbedder,
    ImageEncoder,
    MissingModelFile,
    ModelLoadError,
    kind_problem,
    load_aesthetic,
    load_clip,
    load_dino,
    missing_message,
)
from .flow import sharpness, video_motion
from .videos import VideoFileError, iter_video, read_rgb, resize_longest

logger = logging.getLogger(__name__)

PROG = "python -m chameleon_core.eval hgc"
DEFAULT_VIDEO_PATTERN = "output_{index}.mp4"

DIMENSIONS: dict[str, tuple[str, ...]] = {
    "identity": ("face_similarity", "face_found", "reference_clip", "reference_dino"),
    "motion": ("motion_pct_diagonal", "motion_px", "motion_top_px"),
    "smoothness": ("smoothness", "smoothness_min", "warp_error", "warp_error_max", "occluded"),
    "image quality": ("aesthetic", "sharpness"),
    "garment": ("garment_clip", "garment_dino"),
}
METRICS = tuple(m for names in DIMENSIONS.values() for m in names)
MODEL_METRICS = {
    "clip": ("garment_clip", "reference_clip"),
    "dino": ("garment_dino", "reference_dino"),
    "face": ("face_similarity", "face_found"),
    "face_detector": ("face_similarity", "face_found"),
    "aesthetic": ("aesthetic",),
}
AESTHETIC_NAMES = ("aesthetic.safetensors", "aesthetic.pth", "sac+logos+ava1-l14-linearMSE.pth")


class BenchError(ValueError):
    """A problem with the benchmark inputs (CSV, columns, folders) the user must fix."""


# -------------------------------------------------------------------------------------------------------------------
# The benchmark's meta_data.csv
# -------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetaColumns:
    """Which CSV column holds what (defaults: the columns the authors' scripts read)."""

    prompt: str = "prompt"
    reference: str = "src_image"
    garment: str = "cloth_image"
    video: str | None = None
    """A column naming each row's generated video (relative to the videos folder); ``None``: use the pattern."""


@dataclass(frozen=True)
class BenchSample:
    index: int
    """0-based row of the CSV (the authors name row ``i``'s video ``output_{i}.mp4``)."""
    prompt: str
    reference: Path
    garment: Path
    video: Path


def prompt_text(cell: str) -> str:
    """A ``prompt`` cell -> the prompt: ``caption.en_short`` of the JSON (a list of sentences is joined with
    spaces), falling back to ``en_short`` at the top level, else the cell as plain text."""
    try:
        data = json.loads(cell)
    except (json.JSONDecodeError, TypeError):
        return cell
    if not isinstance(data, dict):
        return cell
    caption = data.get("caption", data)
    short = caption.get("en_short") if isinstance(caption, dict) else None
    if isinstance(short, list):
        return " ".join(str(s) for s in short)
    return str(short) if short is not None else cell


def resolve_image(value: str, data_root: Path) -> Path:
    """A CSV image path: absolute as given; else under ``data_root``, else under the working directory, else its
    trailing parts under ``data_root`` (``./HGC-Bench/samples/x.png`` written for another working directory is
    found as ``<data_root>/samples/x.png``); if none exists, ``data_root / value`` (reported missing later)."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    for base in (data_root, Path.cwd()):
        if (base / p).exists():
            return base / p
    for k in range(1, len(p.parts)):
        if (data_root / Path(*p.parts[k:])).exists():
            return data_root / Path(*p.parts[k:])
    return data_root / p


def read_meta(csv_path: Path, videos: Path, *, columns: MetaColumns = MetaColumns(), data_root: Path | None = None,
              video_pattern: str = DEFAULT_VIDEO_PATTERN) -> list[BenchSample]:
    """The rows of HGC-Bench's ``meta_data.csv`` with their generated videos; raises :class:`BenchError`."""
    if not csv_path.exists():
        raise BenchError(f"--meta: {csv_path} not found (absolute: {csv_path.resolve()}); pass HGC-Bench's "
                         "meta_data.csv")
    try:
        check_regular_file(csv_path, "--meta file", "pass HGC-Bench's meta_data.csv")
    except CheckpointError as e:
        raise BenchError(str(e)) from None
    if csv_path.stat().st_size == 0:
        raise BenchError(f"--meta: {csv_path} is empty (0 bytes); pass HGC-Bench's meta_data.csv (a header row with "
                         f"{columns.prompt}, {columns.reference}, {columns.garment}, then one row per sample)")
    data_root = csv_path.parent if data_root is None else data_root
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            found = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BenchError(f"--meta: cannot read {csv_path} as CSV ({e}); pass HGC-Bench's meta_data.csv as UTF-8 "
                         "text") from None
    flags = {"prompt": "--prompt-column", "reference": "--reference-column", "garment": "--garment-column",
             "video": "--video-column"}
    for name, flag in flags.items():
        col = getattr(columns, name)
        if col is not None and col not in found:
            raise BenchError(f"{csv_path} has no column {col!r} (for the {name}); its columns are {found}; name the "
                             f"right one with {flag}")
    if not rows:
        raise BenchError(f"--meta: {csv_path} has a header but no rows; pass the benchmark's meta_data.csv with its "
                         "samples")
    samples = []
    for i, row in enumerate(rows):
        used = [c for c in (columns.prompt, columns.reference, columns.garment, columns.video) if c is not None]
        empty = [c for c in used if not row.get(c)]
        if empty:
            raise BenchError(f"--meta: row {i} of {csv_path} (line {i + 2}) has no value in column(s) {empty}; fix or "
                             "remove that row")
        if columns.video is not None:
            video = videos / row[columns.video]
        else:
            ref_stem, garment_stem = Path(row[columns.reference]).stem, Path(row[columns.garment]).stem
            try:
                video = videos / video_pattern.format(index=i, stem=ref_stem, garment_stem=garment_stem)
            except (KeyError, IndexError, ValueError) as e:
                raise BenchError(f"--video-pattern {video_pattern!r} is not usable ({e!r}); use the fields {{index}}, "
                                 "{stem} (reference image stem) and {garment_stem}") from None
        samples.append(BenchSample(i, prompt_text(row[columns.prompt]), resolve_image(row[columns.reference], data_root),
                                   resolve_image(row[columns.garment], data_root), video))
    return samples


# -------------------------------------------------------------------------------------------------------------------
# Scoring
# -------------------------------------------------------------------------------------------------------------------


@dataclass
class Scorers:
    """The model-based scorers that could be loaded (``None``: skipped)."""

    clip: ImageEncoder | None = None
    dino: ImageEncoder | None = None
    aesthetic: AestheticPredictor | None = None
    face: FaceEmbedder | None = None
    skipped: list[str] = field(default_factory=list)
    """One message per model file not used."""


@dataclass(frozen=True)
class Settings:
    flow_size: int = 256
    frame_stride: int = 8
    max_frames: int | None = None


def pad_square_white(image: np.ndarray) -> np.ndarray:
    """Pad an RGB image with white to a centred square (the garment stays whole through a centre crop)."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = image
    return out


def _mean_cosine(anchor: torch.Tensor, others: torch.Tensor) -> float:
    return float((others @ anchor[0]).mean())


def score_video(sample: BenchSample, scorers: Scorers, settings: Settings = Settings()) -> dict[str, Any]:
    """Every metric of one sample (``None`` for a metric whose model or input is missing); raises
    :class:`VideoFileError` when the video cannot be read."""
    # One pass over the video: every frame shrunk for the flow metrics, every stride-th kept at full size.
    small, sampled = [], []
    for i, frame in enumerate(iter_video(sample.video, max_frames=settings.max_frames)):
        small.append(resize_longest(frame, settings.flow_size))
        if i % max(1, settings.frame_stride) == 0:
            sampled.append(frame)
    small_frames = np.stack(small)
    h, w = small_frames.shape[1:3]
    result: dict[str, Any] = {"index": sample.index, "video": str(sample.video), "prompt": sample.prompt,
                              "frames": len(small), "size": [sampled[0].shape[1], sampled[0].shape[0]],
                              "measured_size": [w, h]}
    motion = video_motion(small_frames)
    result.update(motion.summary(math.hypot(w, h)))
    result["sharpness"] = sharpness(small_frames)
    result.update({m: None for m in METRICS if m not in result})
    reference = _optional_image(sample.reference, "reference", sample.index)
    garment = _optional_image(sample.garment, "garment", sample.index)
    for encoder in (scorers.clip, scorers.dino):
        if encoder is None:
            continue
        embedded = encoder.embed(sampled)
        if garment is not None:
            result[f"garment_{encoder.name}"] = _mean_cosine(encoder.embed([pad_square_white(garment)]), embedded)
        if reference is not None:
            result[f"reference_{encoder.name}"] = _mean_cosine(encoder.embed([reference]), embedded)
        if encoder.name == "clip" and scorers.aesthetic is not None:
            result["aesthetic"] = float(scorers.aesthetic(embedded).mean())
    if scorers.face is not None and reference is not None:
        result.update(_face_scores(scorers.face, reference, sampled, sample.index))
    result["series"] = motion.series()
    return result


def _optional_image(path: Path, what: str, index: int) -> np.ndarray | None:
    try:
        return read_rgb(path)
    except VideoFileError as e:
        logger.warning("row %d: %s image unusable, its metrics are skipped: %s", index, what, e)
        return None


def _face_scores(face: FaceEmbedder, reference: np.ndarray, frames: list[np.ndarray], index: int) -> dict[str, Any]:
    anchor = face.embed(reference)
    if anchor is None:
        logger.warning("row %d: no face found in the reference image; face_similarity skipped", index)
        return {}
    vectors = [face.embed(f) for f in frames]
    found = [v for v in vectors if v is not None]
    return {"face_found": len(found) / len(frames),
            "face_similarity": float(np.mean([v @ anchor for v in found])) if found else None}


def summarize(per_video: list[dict[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Mean (and count) of every metric over the videos that have it."""
    out = {}
    for m in METRICS:
        values = [r[m] for r in per_video if r.get(m) is not None]
        if values:
            out[m] = {"mean": float(np.mean(values)), "n": len(values)}
    return out


def table(summary: dict[str, dict[str, float | int]]) -> str:
    lines = [f"{'dimension':<14} {'metric':<20} {'mean':>10} {'n':>5}"]
    for dim, names in DIMENSIONS.items():
        for m in names:
            s = summary.get(m)
            lines.append(f"{dim:<14} {m:<20} {s['mean'] if s else float('nan'):>10.4f} {s['n'] if s else 0:>5}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------------------
# Models from the command line
# -------------------------------------------------------------------------------------------------------------------


def model_paths(explicit: dict[str, Path | None], models_dir: Path | None) -> tuple[dict[str, Path], list[str]]:
    """Which model files to load, and one message per model skipped. Raises :class:`MissingModelFile` (listing every
    explicitly given path that does not exist)."""
    paths: dict[str, Path] = {}
    skipped: list[str] = []
    errors = []
    for key, src in MODEL_SOURCES.items():
        metrics = ", ".join(MODEL_METRICS[key])
        given = explicit.get(key)
        if given is not None:
            problem = kind_problem(key, given)
            if problem is None:
                paths[key] = given
            else:
                errors.append(problem)
            continue
        if models_dir is not None:
            names = AESTHETIC_NAMES if key == "aesthetic" else (src.default_name,)
            found = [models_dir / n for n in names if (models_dir / n).exists()]
            if found:
                paths[key] = found[0]
                continue
            skipped.append(f"skipping {metrics}: {missing_message(key, models_dir / names[0])}")
        else:
            skipped.append(f"skipping {metrics}: {src.flag} not given ({src.what}; get it from {src.where})")
    if errors:
        raise MissingModelFile("\n".join(errors))
    return paths, skipped


def load_scorers(paths: dict[str, Path], skipped: list[str], device: torch.device | str = "cpu") -> Scorers:
    """Load what ``paths`` names (CLIP and DINOv2 onto ``device``; the aesthetic MLP runs on the CPU over CLIP's
    embeddings; faces run through OpenCV on the CPU); a scorer whose companion file is missing is skipped with a
    message. Raises :class:`ModelLoadError` for a file that exists but cannot be used."""
    s = Scorers(skipped=list(skipped))
    if "clip" in paths:
        s.clip = load_clip(paths["clip"], device)
    if "dino" in paths:
        s.dino = load_dino(paths["dino"], device)
    if "aesthetic" in paths:
        if s.clip is None:
            s.skipped.append("skipping aesthetic: it scores CLIP ViT-L/14 embeddings, and no CLIP folder (--clip) "
                             "was loaded")
        else:
            s.aesthetic = load_aesthetic(paths["aesthetic"])
            if s.aesthetic.layers[0].in_features != s.clip.dim:
                raise ModelLoadError(
                    f"--aesthetic expects {s.aesthetic.layers[0].in_features}-d CLIP embeddings but the CLIP at "
                    f"{paths['clip']} gives {s.clip.dim}-d ones; use CLIP ViT-L/14 (openai/clip-vit-large-patch14)")
    if "face" in paths and "face_detector" in paths:
        s.face = FaceEmbedder(paths["face"], paths["face_detector"])
    elif "face" in paths or "face_detector" in paths:
        have = "face" if "face" in paths else "face_detector"
        s.skipped.append(f"skipping face_similarity: {MODEL_SOURCES[have].flag} was found but the other face file "
                         "was not (both the ArcFace recogniser and the YuNet detector are needed)")
    return s


# -------------------------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                epilog="Metrics per dimension, and what each model file feeds: see README.md, "
                                "section 'Evaluate videos', or the docstring of chameleon_core/eval/hgc.py.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meta", type=Path, required=True, help="HGC-Bench's meta_data.csv")
    p.add_argument("--videos", type=Path, required=True, help="folder of generated videos (mp4 files or frame folders)")
    p.add_argument("--out", type=Path, required=True, help="results JSON to write")
    p.add_argument("--data-root", type=Path, help="folder the CSV's image paths are relative to (default: the CSV's)")
    p.add_argument("--video-pattern", default=DEFAULT_VIDEO_PATTERN,
                   help="video name per row: {index} (0-based row), {stem} (reference image stem), {garment_stem}")
    p.add_argument("--video-column", help="CSV column naming each video instead of --video-pattern")
    p.add_argument("--prompt-column", default="prompt", help="CSV column of the caption JSON (prompt)")
    p.add_argument("--reference-column", default="src_image", help="CSV column of the reference image (src_image)")
    p.add_argument("--garment-column", default="cloth_image", help="CSV column of the garment image (cloth_image)")
    m = p.add_argument_group("model files (metrics whose files are not given are skipped)")
    m.add_argument("--models-dir", type=Path, help="folder holding clip/, dinov2/, arcface.onnx, "
                   "face_detection_yunet_2023mar.onnx and aesthetic.safetensors (or .pth)")
    for key, src in MODEL_SOURCES.items():
        m.add_argument(src.flag, dest=key, type=Path, help=f"{src.what}; from {src.where}")
    p.add_argument("--flow-size", type=int, default=256, help="longer side the flow metrics are measured at (256)")
    p.add_argument("--frame-stride", type=int, default=8, help="model metrics on every N-th frame (8)")
    p.add_argument("--max-frames", type=int, help="read at most this many frames per video")
    p.add_argument("--limit", type=int, help="score only the first N rows")
    p.add_argument("--device", default=None, help="device for CLIP / DINOv2 (default: cuda when available, else cpu)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _check_args(args: argparse.Namespace) -> None:
    check_output_file(args.out, "--out", "results.json")
    if not args.videos.is_dir():
        raise BenchError(f"--videos: {args.videos} is not a folder; pass the folder holding the generated videos")
    for name in ("flow_size", "frame_stride", "max_frames", "limit"):
        value = getattr(args, name)
        if value is not None and value < (2 if name in ("flow_size", "max_frames") else 1):
            raise BenchError(f"--{name.replace('_', '-')} must be a positive integer (at least 2 for sizes and frame "
                             f"counts), got {value}")
    if args.models_dir is not None and not args.models_dir.is_dir():
        raise BenchError(f"--models-dir: {args.models_dir} is not a folder")


def run(args: argparse.Namespace) -> dict[str, Any]:
    _check_args(args)
    columns = MetaColumns(args.prompt_column, args.reference_column, args.garment_column, args.video_column)
    samples = read_meta(args.meta, args.videos, columns=columns, data_root=args.data_root,
                        video_pattern=args.video_pattern)[: args.limit]
    paths, skipped = model_paths({k: getattr(args, k) for k in MODEL_SOURCES}, args.models_dir)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise BenchError(f"--device: {args.device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BenchError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    scorers = load_scorers(paths, skipped, device)
    for message in scorers.skipped:
        logger.warning("%s", message)
    present = [s for s in samples if s.video.exists()]
    missing = [str(s.video) for s in samples if not s.video.exists()]
    if not present:
        raise BenchError(f"none of the {len(samples)} videos exists in {args.videos} (first expected: "
                         f"{samples[0].video if samples else 'no rows'}); check --videos and --video-pattern")
    if missing:
        logger.warning("%d of %d videos are missing (first: %s); they are left out", len(missing), len(samples),
                       missing[0])
    settings = Settings(args.flow_size, args.frame_stride, args.max_frames)
    per_video, failed = [], []
    for sample in _progress(present):
        try:
            per_video.append(score_video(sample, scorers, settings))
        except VideoFileError as e:
            logger.warning("row %d: %s", sample.index, e)
            failed.append({"index": sample.index, "video": str(sample.video), "error": str(e)})
    summary = summarize(per_video)
    return {
        "meta": str(args.meta), "videos": str(args.videos), "settings": vars(settings),
        "models": {k: str(v) for k, v in paths.items()}, "skipped_models": scorers.skipped,
        "missing_videos": missing, "failed_videos": failed, "mean": summary, "per_video": per_video,
    }


def _progress(items):
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm

            return tqdm(items, desc="scoring", unit="video")
        except ImportError:
            pass
    return items


def main(argv: Sequence[str] | None = None) -> int:
    """Returns 0, or 2 with one message for a user error (:mod:`chameleon_core.tools.command`)."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")

    def body() -> int:
        results = run(args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        logger.info("%d videos scored (%d missing, %d unreadable); results in %s\n%s", len(results["per_video"]),
                    len(results["missing_videos"]), len(results["failed_videos"]), args.out, table(results["mean"]))
        return 0

    return run_command(PROG, body, verbose=args.verbose)
