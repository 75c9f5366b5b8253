"""Reading FashionChameleon's training data and the HGC-Bench evaluation set (the authors' layouts).

Training CSV (``datasets/fashion_dataset.py``): columns ``video, prompt, width, height``; ``video`` is a path
(relative to the CSV's folder or absolute) to an mp4; the reference is ``<video stem>_src.png`` and the garment
``<video stem>_cloth.png`` beside it; ``prompt`` is a caption JSON ``{"cn_long": [dynamic, static], "cn_short":
[...], "en_long": [...], "en_short": [...]}`` whose missing keys are filled from the others.

Fitting reuses :mod:`chameleon_core.images`: video frames and reference by the max ratio, antialiased, centre-crop
(:func:`~chameleon_core.images.fit_video`, :func:`~chameleon_core.images.fit_reference`); garment by the min ratio,
padded white with ``floor(diff / 2)`` left and top (:func:`~chameleon_core.images.fit_garment`). The first N = 4k+1
frames are used.

Aspect buckets: the training size is ``width x height`` (portrait 704 x 1280 in the paper); a row whose CSV
``width > height`` disagrees with that orientation goes to the transposed size, so each orientation forms its own
bucket and a batch never mixes sizes.

Bad data raises :class:`DataError` naming the CSV row and the file. :func:`check_row` finds, without encoding
anything, every problem of a row that would stop ``prepare`` later (caption JSON, missing or undecodable video, too
few frames, missing or unreadable reference / garment), so ``prepare`` can list every bad row in one report.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from chameleon_core.frames import is_whole_video
from chameleon_core.images import (
    fit_garment,
    fit_reference,
    fit_video,
    load_image,
    to_pixels,
)

logger = logging.getLogger(__name__)

CAPTION_KEYS = ("en_long", "en_short", "cn_long", "cn_short")
#: For a missing key, the keys tried in order to fill it.
CAPTION_FALLBACK = {
    "en_long": ("en_short", "cn_long", "cn_short"),
    "en_short": ("en_long", "cn_short", "cn_long"),
    "cn_long": ("cn_short", "en_long", "en_short"),
    "cn_short": ("cn_long", "en_short", "en_long"),
}
TRAIN_COLUMNS = ("video", "prompt", "width", "height")


class DataError(ValueError):
    """A bad training row: says which row, which file, what is wrong and how to fix it."""


@dataclass(frozen=True)
class TrainRow:
    row: int
    """1-based data row number in the CSV (the header is row 0)."""
    csv: Path
    video: Path
    reference: Path
    garment: Path
    prompt: str
    width: int
    height: int

    @property
    def key(self) -> str:
        return f"{self.row:07d}_{self.video.stem}"

    def where(self) -> str:
        return f"{self.csv} row {self.row}"


def parse_caption(text: str, where: str = "caption") -> dict[str, list[str]]:
    """Caption JSON -> all four keys, each ``[dynamic, static]``, missing keys filled from the others."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise DataError(f"{where}: the prompt is not valid caption JSON ({e}); got {str(text)[:80]!r}") from None
    if not isinstance(data, dict):
        raise DataError(f"{where}: caption JSON must be an object with keys {CAPTION_KEYS}, got {type(data).__name__}")
    out: dict[str, list[str]] = {}
    for key in CAPTION_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            value = [value, ""]
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
            raise DataError(f"{where}: caption key {key!r} must be [dynamic, static] strings, got {value!r}")
        out[key] = value
    if not out:
        raise DataError(f"{where}: caption JSON has none of the keys {CAPTION_KEYS}; got keys {sorted(data)}")
    for key in CAPTION_KEYS:
        if key not in out:
            out[key] = next(out[k] for k in CAPTION_FALLBACK[key] if k in out)
    return out


def caption_texts(caption: dict[str, list[str]]) -> dict[str, str]:
    """The three text variants of a sample: ``dynamic`` (``en_long[0]``), ``full`` (dynamic + " " + static),
    ``empty`` (CFG dropout)."""
    dynamic, static = caption["en_long"]
    full = f"{dynamic} {static}".strip() if static else dynamic
    return {"dynamic": dynamic, "full": full, "empty": ""}


@dataclass(frozen=True)
class RowProblem:
    """Why one CSV row cannot be used."""

    row: int
    video: str
    problem: str

    def __str__(self) -> str:
        return f"row {self.row} ({self.video}): {self.problem}"


def scan_train_csv(path: str | Path) -> tuple[list[TrainRow], list[RowProblem]]:
    """The rows of a training CSV (paths resolved against the CSV's folder) and the rows that cannot even be parsed
    (width / height not integers). Raises DataError for an unreadable file or a bad header."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training CSV not found: {path}; pass --csv with the path to the authors' CSV")
    rows, problems = [], []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in TRAIN_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}; expected {TRAIN_COLUMNS}, got "
                                f"{reader.fieldnames}")
            for i, r in enumerate(reader, start=1):
                video = Path(r["video"] or "")
                video = video if video.is_absolute() else path.parent / video
                try:
                    width, height = int(r["width"]), int(r["height"])
                except (TypeError, ValueError):
                    problems.append(RowProblem(i, r["video"] or "", f"width/height must be integers, got "
                                                                   f"{r['width']!r}, {r['height']!r}"))
                    continue
                rows.append(TrainRow(i, path, video, video.with_name(f"{video.stem}_src.png"),
                                     video.with_name(f"{video.stem}_cloth.png"), r["prompt"] or "", width, height))
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a readable UTF-8 CSV ({e}); save it as UTF-8 CSV with the columns "
                        f"{TRAIN_COLUMNS}") from None
    return rows, problems


def read_train_csv(path: str | Path) -> list[TrainRow]:
    """Rows of a training CSV; paths are resolved against the CSV's folder. Raises DataError for a bad header or
    rows that cannot be parsed (all of them listed)."""
    rows, problems = scan_train_csv(path)
    if problems:
        raise DataError(f"{path}: {len(problems)} row(s) cannot be parsed: " + "; ".join(map(str, problems)))
    return rows


def count_video_frames(path: Path, needed: int) -> int:
    """Frames a video decodes to, counting up to ``needed`` (decodes without converting). Raises DataError when
    the file cannot be decoded."""
    import av

    n = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path} has no video stream")
            for _frame in container.decode(video=0):
                n += 1
                if n >= needed:
                    break
    except (av.error.FFmpegError, OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"cannot decode video {path} ({e}); re-encode it as mp4 (H.264)") from None
    return n


def check_row(row: TrainRow, frames: int) -> list[str]:
    """Every problem of ``row`` that would stop ``prepare`` (empty when it is fine): caption JSON, the video (found,
    decodable, at least ``frames`` frames), the reference and garment images (found, readable)."""
    problems = []
    try:
        parse_caption(row.prompt, "caption")
    except DataError as e:
        problems.append(str(e))
    if not row.video.is_file():
        problems.append(f"video file not found: {row.video}; fix the CSV's video column or add the file")
    else:
        try:
            n = count_video_frames(row.video, frames)
            if n < frames:
                problems.append(f"video {row.video} has {n} frames but {frames} are needed")
        except DataError as e:
            problems.append(str(e))
    for what, path, suffix in (("reference", row.reference, "src"), ("garment", row.garment, "cloth")):
        if not path.is_file():
            problems.append(f"{what} image not found: {path} (expected beside the video as <stem>_{suffix}.png)")
            continue
        try:
            load_image(path)
        except (OSError, ValueError) as e:
            problems.append(f"cannot read {what} image {path} ({e})")
    return problems


def bucket_size(row: TrainRow, width: int, height: int) -> tuple[int, int]:
    """The training size of a row: ``(width, height)``, transposed when the row's orientation is the other one."""
    if (row.width > row.height) != (width > height) and row.width != row.height:
        return height, width
    return width, height


def read_video(path: Path, frames: int, where: str) -> torch.Tensor:
    """The first ``frames`` frames of a video file -> ``[T, H, W, 3]`` float in 0..1 (PyAV)."""
    import av

    if not path.is_file():
        raise DataError(f"{where}: video file not found: {path}; fix the CSV's video column or add the file")
    out = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                out.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
                if len(out) == frames:
                    break
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"{where}: cannot decode video {path} ({e}); re-encode it as mp4 (H.264)") from None
    if len(out) < frames:
        raise DataError(
            f"{where}: video {path} has {len(out)} frames but {frames} are needed; drop the row (--skip-bad) or "
            f"lower the frame count (4k+1)"
        )
    return torch.stack(out).float() / 255.0


def _image(path: Path, what: str, where: str) -> torch.Tensor:
    if not path.is_file():
        raise DataError(f"{where}: {what} image not found: {path} (expected beside the video as <stem>_"
                        f"{'src' if what == 'reference' else 'cloth'}.png)")
    try:
        return load_image(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{where}: cannot read {what} image {path} ({e}); replace it with a valid PNG") from None


def load_sample(row: TrainRow, frames: int, width: int, height: int) -> dict[str, object]:
    """Pixels and captions of one row at ``width x height``: ``video [1, 3, T, H, W]``, ``reference`` and
    ``garment [1, 3, H, W]`` in [-1, 1], and ``texts`` (the three caption variants)."""
    if not is_whole_video(frames):
        raise ValueError(f"frame count must be 4k+1 (81, 49, 9, 5, ...), got {frames}")
    where = row.where()
    texts = caption_texts(parse_caption(row.prompt, where))
    video = read_video(row.video, frames, where)  # [T, H, W, 3]
    reference = _image(row.reference, "reference", where)
    garment = _image(row.garment, "garment", where)
    video = fit_video(video, width, height)  # [T, h, w, 3]
    return {
        "video": (video.permute(3, 0, 1, 2) * 2.0 - 1.0)[None],  # [1, 3, T, h, w]
        "reference": to_pixels(fit_reference(reference, width, height)),  # [1, 3, h, w]
        "garment": to_pixels(fit_garment(garment, width, height)),
        "texts": texts,
    }


@dataclass(frozen=True)
class BenchSample:
    """One HGC-Bench evaluation sample."""

    row: int
    prompt: str
    """``caption.en_short`` of the prompt JSON (dynamic and static joined)."""
    reference: Path
    garment: Path


def read_hgc_bench(meta_csv: str | Path) -> list[BenchSample]:
    """HGC-Bench's ``meta_data.csv``: ``prompt`` (JSON with ``caption.en_short``), ``src_image``, ``cloth_image``."""
    path = Path(meta_csv)
    if not path.is_file():
        raise FileNotFoundError(f"HGC-Bench meta data not found: {path}; pass the path to meta_data.csv")
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = ("prompt", "src_image", "cloth_image")
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; HGC-Bench has {need}")
        for i, r in enumerate(reader, start=1):
            where = f"{path} row {i}"
            try:
                prompt = json.loads(r["prompt"])
                caption = prompt.get("caption", prompt)
                en_short = caption["en_short"]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise DataError(f"{where}: prompt JSON lacks caption.en_short ({e!r}); got {r['prompt'][:80]!r}") from None
            text = " ".join(s for s in en_short if s) if isinstance(en_short, list) else str(en_short)
            ref, cloth = Path(r["src_image"]), Path(r["cloth_image"])
            out.append(BenchSample(i, text, ref if ref.is_absolute() else path.parent / ref,
                                   cloth if cloth.is_absolute() else path.parent / cloth))
    return out
