"""Checks of ``prepare`` before any work starts: the device, the frame count and size, the VAE and the text encoder
(headers only), the output folder (a cache of other settings there would be mixed with this one), and every row of
the CSV: its caption, its video (the container header: it opens, has a video stream and enough frames) and its
reference and garment images (their headers). A bad row is an error, or with ``--skip-bad`` a warning (every row bad
is still an error). Problems raise :class:`~.preflight.PreflightError` naming the row, the file and the fix.

What is not checked here (it needs the pixels): a video whose frames are damaged past a sound header; prepare
stops there with the row named (or skips it with ``--skip-bad``), keeping the items already written.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
from pathlib import Path
from typing import Any

from chameleon_core.checkpoints.errors import CheckpointError, check_regular_file
from chameleon_core.frames import whole_video_at_most
from chameleon_core.tools.command import check_output_folder

from .preflight import PreflightError, check_device, check_frames, check_size, listed, vae_channels

logger = logging.getLogger(__name__)

TRAIN_COLUMNS = ("video", "prompt", "width", "height")


def _text_encoder(spec: str) -> None:
    if spec.startswith("random:"):
        dim = spec.split(":", 1)[1]
        if not dim.isdigit() or int(dim) < 1:
            raise PreflightError(f"--text-encoder {spec!r}: expected random:DIM with a whole-number width >= 1 "
                                 "(tests only), or the umT5 folder")
        return
    from chameleon_core.text import resolve_encoder_dirs

    try:
        model_dir, _ = resolve_encoder_dirs(spec)
        check_regular_file(model_dir / "config.json", "umT5 config", "download the encoder folder again")
        values = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except CheckpointError as e:
        raise PreflightError(f"--text-encoder {spec}: {e}") from None
    except (ValueError, OSError) as e:
        raise PreflightError(f"--text-encoder {spec}: {model_dir / 'config.json'} is damaged ({e}); download the "
                             "encoder folder again") from None
    kind = values.get("model_type") if isinstance(values, dict) else None
    if kind != "umt5":
        raise PreflightError(f"--text-encoder {spec}: {model_dir / 'config.json'} describes a {kind!r} model, but Wan's "
                             "text encoder is umT5-XXL; pass the text_encoder/ folder of a Wan diffusers repository "
                             "or google/umt5-xxl")


def _video_frames(path: Path) -> tuple[str | None, int | None]:
    """(problem, frame count from the container header or None when it does not say)."""
    try:
        import av
    except ImportError:
        raise ImportError("prepare reads the training videos with PyAV, which is not installed: pip install av") from None
    try:
        check_regular_file(path, "video", "pass the video file itself")
        with av.open(str(path)) as container:
            if not container.streams.video:
                return f"{path} has no video stream", None
            return None, int(container.streams.video[0].frames or 0) or None
    except CheckpointError as e:
        return str(e), None
    except (av.error.FFmpegError, OSError, ValueError) as e:
        return f"cannot open the video {path} ({type(e).__name__}: {e}); it is damaged or not a video", None


def _row_problems(row, frames: int) -> list[str]:
    from .data import DataError, parse_caption

    where = row.where()
    problems = []
    try:
        parse_caption(row.prompt, where)
    except DataError as e:
        problems.append(str(e))
    if not row.video.exists():
        problems.append(f"{where}: video file not found: {row.video}; fix the CSV's video column or add the file")
    else:
        problem, count = _video_frames(row.video)
        if problem:
            problems.append(f"{where}: {problem}; re-encode it as mp4 (H.264)")
        elif count is not None and count < frames:
            problems.append(f"{where}: video {row.video} has {count} frames but --frames {frames} are needed; pass a "
                            f"smaller --frames (4k+1, at most {whole_video_at_most(count)}) or drop the row "
                            "(--skip-bad)")
    for what, path, suffix in (("reference", row.reference, "_src.png"), ("garment", row.garment, "_cloth.png")):
        if not path.exists():
            problems.append(f"{where}: {what} image not found: {path} (expected beside the video as "
                            f"<stem>{suffix}); add it or drop the row (--skip-bad)")
        else:
            problem = _image_problem(path, what)
            if problem:
                problems.append(f"{where}: {problem}; replace it with a valid PNG or drop the row (--skip-bad)")
    return problems


def _image_problem(path: Path, what: str) -> str | None:
    """Why ``path`` is no image, from its header alone (no pixels decoded), or None."""
    from PIL import Image

    try:
        check_regular_file(path, f"{what} image", "pass the image file itself")
        with Image.open(path) as im:
            im.size  # noqa: B018 -- the header is parsed on open; the size is what it gives
    except CheckpointError as e:
        return str(e)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return f"cannot read the {what} image {path} ({type(e).__name__}: {e})"
    return None


def read_csv_rows(path: str | Path) -> list:
    """The rows of a training CSV (:func:`.data.read_train_csv`), after checking the file itself."""
    from .data import DataError, read_train_csv

    p = Path(path).expanduser()
    if not p.exists():
        raise PreflightError(f"--csv {p}: training CSV not found (absolute: {p.resolve()}); pass the CSV with columns "
                             f"{', '.join(TRAIN_COLUMNS)}")
    try:
        check_regular_file(p, "training CSV", "pass the training CSV file itself")
    except CheckpointError as e:
        raise PreflightError(f"--csv: {e}") from None
    raw = p.read_bytes()
    if not raw.strip():
        raise PreflightError(f"--csv {p} is empty; it needs a header row {','.join(TRAIN_COLUMNS)} and one row per clip")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PreflightError(f"--csv {p} is not UTF-8 text ({e.reason} at byte {e.start}); save the CSV as UTF-8") from None
    try:
        header = next(csv.reader(raw.decode("utf-8").splitlines()))
    except (csv.Error, StopIteration) as e:
        raise PreflightError(f"--csv {p} is not a CSV file ({e}); pass the training CSV") from None
    missing = [c for c in TRAIN_COLUMNS if c not in header]
    if missing:
        raise PreflightError(f"--csv {p}: missing column(s) {missing}; the header must name {list(TRAIN_COLUMNS)}, got "
                             f"{header[:10]}")
    try:
        rows = read_train_csv(p)
    except (DataError, csv.Error) as e:
        raise PreflightError(f"--csv: {e}") from None
    if not rows:
        raise PreflightError(f"--csv {p} has a header but no rows; add one row per training clip")
    return rows


def _existing_cache(out: Path, args) -> None:
    """A cache in ``out`` was prepared with the same settings (prepare reuses its items as they are)."""
    manifest = out / "manifest.json"
    settings = {"frames": args.frames, "width": args.width, "height": args.height, "vae": args.vae,
                "text_encoder": args.text_encoder}
    old: dict[str, Any] = {}
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
            old = {k: meta[k] for k in settings if isinstance(meta, dict) and k in meta}
        except (ValueError, OSError):
            old = {}  # prepare rewrites the manifest at the end
    if "frames" not in old:
        from chameleon_core.checkpoints.tensors import read_safetensors_header

        for item in sorted((out / "items").glob("*.safetensors"))[:1]:
            with contextlib.suppress(CheckpointError, ValueError):  # a damaged item is prepare's to replace
                old["frames"] = int(read_safetensors_header(item)[1].get("frames", args.frames))
    differ = {k: (v, settings[k]) for k, v in old.items() if k in ("frames", "vae", "text_encoder") and v != settings[k]}
    if "width" in old and "height" in old and {old["width"], old["height"]} != {args.width, args.height}:
        differ["size"] = (f"{old['width']}x{old['height']}", f"{args.width}x{args.height}")
    if differ:
        said = ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in differ.items())
        raise PreflightError(f"--out {out} already holds a latent cache prepared with {said}; prepare reuses the items "
                             "there as they are, so the cache would mix two settings: pass a new --out, or the same "
                             "settings to complete it")


def check_prepare(args) -> list:
    """Everything ``prepare`` needs, checked up front; returns the CSV rows. Bad rows are
    errors, or with ``--skip-bad`` warnings (all rows bad is still an error)."""
    check_device(args.device, "--device")
    check_frames(args.frames)
    channels = vae_channels(args.vae, "--vae")
    from chameleon_core.latents import latent_family

    family = latent_family(channels)
    check_size(args.width, args.height, family.spatial_stride * 2)
    _text_encoder(args.text_encoder)
    out = check_output_folder(args.out, "--out")
    if out.is_dir():
        _existing_cache(out, args)
    rows = read_csv_rows(args.csv)
    bad = {r.key: _row_problems(r, args.frames) for r in rows}
    bad = {k: v for k, v in bad.items() if v}
    problems = [p for v in bad.values() for p in v]
    if problems and (not args.skip_bad or len(bad) == len(rows)):
        fix = ("fix them, or pass --skip-bad to leave those rows out" if not args.skip_bad else
               "every row is bad, so nothing would be cached; fix the CSV or its files")
        raise PreflightError(f"--csv {args.csv}: " + listed(problems, f"problem(s) in {len(bad)} of {len(rows)} rows") +
                             f"\n{fix}")
    for p in problems:
        logger.warning("will skip (--skip-bad): %s", p)
    return rows
