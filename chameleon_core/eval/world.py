"""Exact metrics of the synthetic fashion world, and ``python -m chameleon_core.eval world``.

Every metric compares a generated video with the world's ground truth: the clip the renderer draws for the same
attributes (:func:`chameleon_core.world.dataset.ground_truth`), whose per-pixel labels say where the garment, the
body and the background are. Videos are ``[T, H, W, 3]`` float in 0..1; labels ``[T, H, W]`` (0 background,
1 skin, 2 hair, 3 trousers, 4 garment).

Definitions:

- **Colour class** of a pixel: the nearest (RGB, Euclidean) of the 12 garment palette entries, each garment colour
  plain or in its pattern shade (colour x 0.4); it gives the pixel's colour name and whether it is a *dark* mark.
- **Garment colour accuracy**: the fraction of ground-truth garment pixels whose colour class is the target colour.
- **Pattern** of a frame's garment region (:func:`pattern_of`): ``plain`` if under 10% of its pixels are dark;
  else, with ``v`` the mean over rows (of 3+ garment pixels) of the variance of the dark flag along the row:
  ``stripes`` if ``v < 0.045`` (the world's stripes are horizontal: rows are constant), ``dots`` if ``v < 0.2``,
  ``checks`` otherwise (rows alternate: ``v`` about 0.25). **Pattern
  accuracy** is the fraction of frames whose pattern is the target's (frames with fewer than 12 garment pixels are
  skipped). **Garment accuracy** is the mean of colour and pattern accuracy.
- **Leakage** after a switch: the fraction of garment pixels, over the frames from the switch on, whose colour
  class is the *old* garment's colour.
- **Identity error**: for skin, hair and background, the mean absolute difference (over RGB) between the mean
  colour of the video's pixels and the ground truth's pixels in that ground-truth region, over all frames; and their
  mean. 0 when the person and the scene are unchanged.
- **Motion trajectory** (:func:`motion_trajectory`): per frame, from the foreground (pixels farther than 0.12 from
  both the wall colour and the pole colour): centroid x and y, horizontal spread (std of x), top extent (5th
  percentile of y), all in frame units, and the poles' horizontal shift (phase of the pole-coloured pixels' columns,
  unwrapped over time). **Motion agreement**: the cosine similarity of the video's trajectory change from frame 0
  with the ground truth's (flattened); 0 when either does not move (a frozen video scores 0).
  **Motion class**: the motion whose rendering (same person and garment) agrees best with the video.
- **Temporal jitter**: the mean absolute second difference over time ``|x[t+1] - 2 x[t] + x[t-1]|`` (0 for a
  still or uniformly changing video; lower is smoother).
- **Too short to measure**: :func:`score_video` refuses a video of fewer than ``max(5, ceil(cycle / 2))`` frames
  (:func:`min_frames`; ``cycle``: the frames one motion cycle spans). Motion agreement is a cosine over the
  trajectory's changes, and over a few frames any two motions that start in a similar direction agree: with 2 frames
  of a 9-frame cycle a wrong motion scored up to 0.99, with 9 frames of a 33-frame cycle up to 0.76; from half a
  cycle on, at most 0.26 (8 worlds x 20 wrong-motion pairs, cycles of 9, 17 and 33 frames).
- **Switch cut** at frame ``f``: the mean absolute change from frame ``f-1`` to ``f`` divided by the median change
  between the other consecutive frames, both outside the garment (pixels that are body or background in the ground
  truth of both frames). About 1 for a seamless switch; large for a hard cut.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch

from chameleon_core.checkpoints.errors import CheckpointError, check_regular_file
from chameleon_core.tools.command import UsageError, check_output_file, parse_args, run_command
from chameleon_core.world.catalog import BACKGROUND as WALLS
from chameleon_core.world.catalog import (
    GARMENT_COLOUR,
    MOTION,
    PATTERN_SHADE,
    POLE,
    Garment,
    WorldSample,
)
from chameleon_core.world.render import GARMENT_LABEL, HAIR_LABEL, SKIN_LABEL, render
from chameleon_core.world.render import POLE_SPACING as _POLE_SPACING

logger = logging.getLogger(__name__)

PROG = "python -m chameleon_core.eval world"
COLOURS = tuple(GARMENT_COLOUR)
MIN_FRAMES = 5
"""Fewest frames :func:`score_video` measures (one VAE chunk, 4k + 1; temporal jitter needs 3)."""
MIN_GARMENT_PIXELS = 12
FOREGROUND_DISTANCE = 0.12
CUT_EPS = 1e-4
#: Pattern thresholds: dark fraction for plain; mean within-row variance of the dark flag for stripes and dots. On
#: ground-truth renders the row variance is 0 for stripes, 0.09-0.16 for dots, 0.245-0.25 for checks.
PLAIN_BELOW, STRIPES_BELOW, DOTS_BELOW = 0.1, 0.045, 0.2


def _palette() -> torch.Tensor:
    base = torch.tensor([GARMENT_COLOUR[c] for c in COLOURS], dtype=torch.float32) / 255.0
    return torch.cat([base, base * PATTERN_SHADE])  # [12, 3]: plain colours, then their dark shades


def colour_classes(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels ``[..., 3]`` in 0..1 -> (colour index into :data:`COLOURS` ``[...]`` long, dark mark ``[...]`` bool)."""
    palette = _palette().to(pixels.device)
    d = torch.cdist(pixels.reshape(-1, 3).float(), palette)  # [N, 12]
    nearest = d.argmin(dim=1).reshape(pixels.shape[:-1])
    return nearest % len(COLOURS), nearest >= len(COLOURS)


def _check(video: torch.Tensor, labels: torch.Tensor) -> None:
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be [T, H, W, 3] float in 0..1, got shape {tuple(video.shape)}")
    if labels.shape != video.shape[:3]:
        raise ValueError(f"labels {tuple(labels.shape)} must match the video's [T, H, W] {tuple(video.shape[:3])}; "
                         "render the ground truth at the video's size and frame count")


def garment_colour_accuracy_per_frame(video: torch.Tensor, labels: torch.Tensor, colour: str) -> torch.Tensor:
    """``[T]``: per frame, the fraction of ground-truth garment pixels whose colour class is ``colour`` (NaN for a
    frame without garment pixels)."""
    _check(video, labels)
    cls, _ = colour_classes(video)
    mask = labels == GARMENT_LABEL
    hits = ((cls == COLOURS.index(colour)) & mask).flatten(1).sum(1).float()
    count = mask.flatten(1).sum(1).float()
    return torch.where(count > 0, hits / count.clamp(min=1), torch.full_like(count, math.nan))


def pattern_of(dark: torch.Tensor, mask: torch.Tensor) -> str | None:
    """The pattern of one frame's garment region (see the module docstring); None with fewer than 12 pixels."""
    n = int(mask.sum())
    if n < MIN_GARMENT_PIXELS:
        return None
    if dark[mask].float().mean().item() < PLAIN_BELOW:
        return "plain"
    variances = []
    for row_dark, row_mask in zip(dark, mask):
        if int(row_mask.sum()) >= 3:
            variances.append(row_dark[row_mask].float().var(unbiased=False).item())
    row_var = sum(variances) / len(variances) if variances else 0.0
    if row_var < STRIPES_BELOW:
        return "stripes"
    return "dots" if row_var < DOTS_BELOW else "checks"


def pattern_accuracy(video: torch.Tensor, labels: torch.Tensor, pattern: str) -> float:
    """Fraction of frames (with enough garment pixels) whose garment pattern is ``pattern``; NaN if none."""
    _check(video, labels)
    _, dark = colour_classes(video)
    found = [pattern_of(dark[t], labels[t] == GARMENT_LABEL) for t in range(video.shape[0])]
    found = [f for f in found if f is not None]
    return sum(f == pattern for f in found) / len(found) if found else math.nan


def garment_accuracy(video: torch.Tensor, labels: torch.Tensor, garment: Garment) -> dict[str, float]:
    """``{"colour", "pattern", "accuracy"}``: colour accuracy over all garment pixels, pattern accuracy over frames,
    and their mean."""
    per_frame = garment_colour_accuracy_per_frame(video, labels, garment.colour)
    mask = labels == GARMENT_LABEL
    counts = mask.flatten(1).sum(1).float()
    colour = (torch.nan_to_num(per_frame) * counts).sum().item() / max(counts.sum().item(), 1.0)
    pattern = pattern_accuracy(video, labels, garment.pattern)
    return {"colour": colour, "pattern": pattern, "accuracy": (colour + pattern) / 2}


def leakage(video: torch.Tensor, labels: torch.Tensor, old_colour: str, switch_frame: int) -> float:
    """Fraction of ground-truth garment pixels in frames ``>= switch_frame`` whose colour class is the old
    garment's colour (0 for a clean switch)."""
    _check(video, labels)
    cls, _ = colour_classes(video[switch_frame:])
    mask = labels[switch_frame:] == GARMENT_LABEL
    return ((cls == COLOURS.index(old_colour)) & mask).sum().item() / max(int(mask.sum()), 1)


def identity_error(video: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``{"skin", "hair", "background", "identity"}``: per region the mean absolute RGB difference of the mean
    colour of ``video`` and ``truth`` over the ground-truth region (all frames); ``identity`` is their mean."""
    _check(video, labels)
    out = {}
    for name, region in (("skin", labels == SKIN_LABEL), ("hair", labels == HAIR_LABEL), ("background", labels == 0)):
        if not bool(region.any()):
            out[name] = math.nan
            continue
        out[name] = (video[region].float().mean(0) - truth[region].float().mean(0)).abs().mean().item()
    present = [v for v in out.values() if not math.isnan(v)]
    out["identity"] = sum(present) / len(present) if present else math.nan
    return out


def motion_trajectory(video: torch.Tensor, wall: tuple[int, int, int] | torch.Tensor) -> torch.Tensor:
    """``[T, 5]``: foreground centroid x, centroid y, horizontal spread, top extent, pole shift (frame units)."""
    t, h, w, _ = video.shape
    wall_rgb = torch.as_tensor(wall, dtype=torch.float32) / 255.0
    pole_rgb = wall_rgb * POLE
    d_wall = (video.float() - wall_rgb).norm(dim=-1)
    d_pole = (video.float() - pole_rgb).norm(dim=-1)
    fg = (d_wall > FOREGROUND_DISTANCE) & (d_pole > FOREGROUND_DISTANCE)
    poles = d_pole <= FOREGROUND_DISTANCE
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    rows = []
    prev_phase = None
    unwrapped = 0.0
    for i in range(t):
        m = fg[i]
        if int(m.sum()) == 0:
            cx = cy = spread = top = 0.0
        else:
            yy, xx = torch.nonzero(m, as_tuple=True)
            px, py = xs[xx], ys[yy]
            cx, cy = px.mean().item(), py.mean().item()
            spread = px.std(unbiased=False).item()
            top = torch.quantile(py, 0.05).item()
        cols = poles[i].float().sum(0)  # [W]
        angle = torch.atan2((cols * torch.sin(2 * math.pi * xs / _POLE_SPACING)).sum(),
                            (cols * torch.cos(2 * math.pi * xs / _POLE_SPACING)).sum()).item()
        if prev_phase is not None:
            step = (angle - prev_phase + math.pi) % (2 * math.pi) - math.pi
            unwrapped += step
        prev_phase = angle
        rows.append([cx, cy, spread, top, unwrapped * _POLE_SPACING / (2 * math.pi)])
    return torch.tensor(rows)


def _cosine_of_change(a: torch.Tensor, b: torch.Tensor) -> float:
    da, db = (a - a[:1]).flatten(), (b - b[:1]).flatten()
    na, nb = da.norm().item(), db.norm().item()
    if na < 1e-6 or nb < 1e-6:
        return 0.0
    return float(torch.dot(da, db).item() / (na * nb))


def motion_agreement(video: torch.Tensor, truth: torch.Tensor, wall: tuple[int, int, int]) -> float:
    """Cosine similarity of the video's and the ground truth's trajectory change from frame 0 (-1..1; 0 if either
    is still)."""
    if video.shape[0] != truth.shape[0]:
        raise ValueError(f"video has {video.shape[0]} frames but the ground truth {truth.shape[0]}; they must match")
    return _cosine_of_change(motion_trajectory(video, wall), motion_trajectory(truth, wall))


def motion_scores(video: torch.Tensor, sample: WorldSample, garment: Garment | None = None,
                  motion_frames: int | None = None) -> dict[str, float]:
    """Agreement of ``video`` with each motion rendered for ``sample`` (same person, garment, size and frame count;
    ``motion_frames`` as in :func:`chameleon_core.world.render`)."""
    t, h = video.shape[0], video.shape[1]
    wall = WALLS[sample.identity.background]
    traj = motion_trajectory(video, wall)
    out = {}
    for m in MOTION:
        truth = render(WorldSample(sample.identity, garment or sample.garment, m, sample.reference_garment),
                       size=h, frames=t, motion_frames=motion_frames).float_frames()
        out[m] = _cosine_of_change(traj, motion_trajectory(truth, wall))
    return out


def temporal_jitter(video: torch.Tensor) -> float:
    """Mean absolute second temporal difference of the pixels (0 for fewer than 3 frames)."""
    if video.shape[0] < 3:
        return 0.0
    v = video.float()
    return (v[2:] - 2 * v[1:-1] + v[:-2]).abs().mean().item()


def switch_cut(video: torch.Tensor, switch_frame: int, keep: torch.Tensor | None = None) -> float:
    """Change across the switch (frame ``switch_frame - 1`` -> ``switch_frame``) over the median change between the
    other consecutive frames, within ``keep`` (``[T, H, W]`` bool; pixels compared between frames t-1 and t are
    those kept in both; all pixels if None)."""
    t = video.shape[0]
    if not 1 <= switch_frame < t:
        raise ValueError(f"switch_frame must be in 1..{t - 1} for a {t}-frame video, got {switch_frame}")
    if t < 3:
        raise ValueError(f"a switch cut needs at least 3 frames (one ordinary change), got {t}")
    v = video.float()
    changes = []
    for i in range(1, t):
        diff = (v[i] - v[i - 1]).abs().mean(-1)  # [H, W]
        if keep is not None:
            both = keep[i] & keep[i - 1]
            changes.append(diff[both].mean().item() if bool(both.any()) else 0.0)
        else:
            changes.append(diff.mean().item())
    cut = changes[switch_frame - 1]
    ordinary = torch.tensor(changes[: switch_frame - 1] + changes[switch_frame:]).median().item()
    return cut / max(ordinary, CUT_EPS)


def min_frames(motion_frames: int | None, frames: int) -> int:
    """Fewest frames a video of ``frames`` frames needs to be scored: ``max(5, ceil(cycle / 2))`` with ``cycle`` the
    motion cycle (``motion_frames``, default the video's length); see the module docstring."""
    return max(MIN_FRAMES, math.ceil((motion_frames or frames) / 2))


def score_video(video: torch.Tensor, sample: WorldSample, *, switch_to: Garment | None = None,
                switch_frame: int | None = None, motion_frames: int | None = None) -> dict[str, float]:
    """All world metrics of one generated video ``[T, H, W, 3]`` (0..1) of ``sample``; with a switch, garment
    accuracy is measured from ``switch_frame`` on against ``switch_to`` (and before it against the first garment),
    leakage and the cut at the switch are added. ``motion_frames``: the frames one motion cycle spans (the training
    clip length; default the video's length), so a stream longer than a clip is scored against the motion
    continued (:func:`chameleon_core.world.render`)."""
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[1] != video.shape[2]:
        raise ValueError(f"video must be square frames [T, H, H, 3] in 0..1 (the world's), got {tuple(video.shape)}")
    t, h = video.shape[0], video.shape[1]
    need = min_frames(motion_frames, t)
    if t < need:
        raise ValueError(
            f"the video has {t} frame(s), too few to measure: motion agreement over so few frames cannot tell one "
            f"motion from another, so a video of a {motion_frames or t}-frame motion cycle needs at least {need} "
            f"frames (half a cycle, and at least {MIN_FRAMES}); score a longer video"
        )
    if switch_frame is not None and not 1 <= switch_frame < t:
        raise ValueError(f"the switch frame {switch_frame} is not inside the {t}-frame video; it must be in 1..{t - 1}")
    truth_r = render(sample, size=h, frames=t, switch_to=switch_to, switch_frame=switch_frame,
                     motion_frames=motion_frames)
    truth, labels = truth_r.float_frames(), truth_r.labels
    wall = WALLS[sample.identity.background]
    out: dict[str, float] = {}
    if switch_to is None:
        out.update({f"garment_{k}": v for k, v in garment_accuracy(video, labels, sample.garment).items()})
    else:
        before = garment_accuracy(video[:switch_frame], labels[:switch_frame], sample.garment)
        after = garment_accuracy(video[switch_frame:], labels[switch_frame:], switch_to)
        out.update({f"garment_{k}_before": v for k, v in before.items()})
        out.update({f"garment_{k}": v for k, v in after.items()})
        out["leakage"] = leakage(video, labels, sample.garment.colour, switch_frame)
        out["switch_cut"] = switch_cut(video, switch_frame, keep=labels != GARMENT_LABEL)
    out.update({f"identity_error_{k}" if k != "identity" else "identity_error": v
                for k, v in identity_error(video, truth, labels).items()})
    out["motion_agreement"] = motion_agreement(video, truth, wall)
    scores = motion_scores(video, sample, sample.garment, motion_frames)
    out["motion_correct"] = float(max(scores, key=scores.get) == sample.motion)
    out["temporal_jitter"] = temporal_jitter(video)
    out["temporal_jitter_truth"] = temporal_jitter(truth)
    return out


# --- command line ---------------------------------------------------------------------------------------------------


def _read_video(path: Path) -> torch.Tensor:
    """A video file -> ``[T, H, W, 3]`` float in 0..1; :class:`~.videos.VideoFileError` (a ValueError) names a
    missing, damaged or one-frame file."""
    from .videos import read_video

    return torch.from_numpy(read_video(path)).float() / 255.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Score generated videos of the synthetic fashion world exactly against its ground truth.",
    )
    p.add_argument("--data", required=True, type=Path,
                   help="the world dataset folder holding <stem>.json metadata (root/<split>, as write_dataset made)")
    p.add_argument("--videos", required=True, type=Path,
                   help="folder of generated videos named <stem>.mp4 after the dataset samples")
    p.add_argument("--out", required=True, type=Path, help="JSON file to write (per-video scores and their means)")
    p.add_argument("--switch-frame", type=int, default=None,
                   help="the videos switch garment at this frame, to the metadata's switch_garment")
    return p


def _metadata(path: Path) -> dict:
    """The dataset metadata of a video, or :class:`~chameleon_core.tools.command.UsageError` naming the file."""
    from chameleon_core.world.dataset import read_metadata

    json_file = path.with_suffix(".json")
    try:
        check_regular_file(json_file, "world metadata file", "pass the dataset folder that write_dataset made")
        return read_metadata(path)
    except CheckpointError as e:
        raise UsageError(str(e)) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"world metadata {json_file} is damaged or not the world's ({type(e).__name__}: {e}); "
                         "write the dataset again (chameleon_core.world.write_dataset)") from None


def _check_folders(args: argparse.Namespace) -> list[Path]:
    """Everything checked before any video is scored; returns the videos."""
    for what, folder in (("--data", args.data), ("--videos", args.videos)):
        if not folder.is_dir():
            holds = "dataset's <stem>.json files" if what == "--data" else "generated <stem>.mp4 videos"
            raise UsageError(f"{what} {folder} is not a folder; pass the folder that holds the {holds}")
    check_output_file(args.out, "--out", "scores.json")
    if args.switch_frame is not None and args.switch_frame < 1:
        raise UsageError(f"--switch-frame {args.switch_frame}: the switch must come after the first frame (>= 1); pass "
                         "the video frame where the garment changes")
    videos = sorted(args.videos.glob("*.mp4"))
    if not videos:
        raise UsageError(f"no .mp4 videos in {args.videos}; generate videos named after the dataset samples "
                         "(<stem>.mp4)")
    missing = [v.name for v in videos if not (args.data / f"{v.stem}.json").is_file()]
    if missing:
        raise UsageError(f"no metadata in {args.data} for {len(missing)} video(s): {missing[:5]}; name each video "
                         "after its sample (<stem>.mp4) and pass the dataset folder that holds <stem>.json")
    return videos


def score_folder(args: argparse.Namespace) -> int:
    """Score every ``<stem>.mp4`` of ``--videos`` and write ``--out``; raises a user error naming the video."""
    videos = _check_folders(args)
    metas = {v: _metadata(args.data / f"{v.stem}.mp4") for v in videos}  # every metadata file before any scoring
    per_video = {}
    for v in videos:
        meta = metas[v]
        video = _read_video(v)
        switch = {} if args.switch_frame is None else {"switch_to": meta["switch_garment"],
                                                       "switch_frame": args.switch_frame}
        try:
            scores = score_video(video, meta["sample"], motion_frames=meta["frames"], **switch)
        except ValueError as e:
            raise UsageError(f"{v}: {e}") from None
        per_video[v.stem] = scores
        logger.info("%s: %s", v.stem, {k: round(s, 4) for k, s in scores.items()})
    keys = sorted({k for s in per_video.values() for k in s})
    mean = {}
    for k in keys:
        vals = [s[k] for s in per_video.values() if k in s and not math.isnan(s[k])]
        mean[k] = sum(vals) / len(vals) if vals else math.nan
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"videos": per_video, "mean": mean, "count": len(per_video),
                                    "switch_frame": args.switch_frame}, indent=1))
    logger.info("wrote %s (%d videos)", args.out, len(per_video))
    return 0


def main(argv: list[str]) -> int:
    """Score every ``<stem>.mp4`` in ``--videos`` against ``--data/<stem>.json``; writes ``--out``. Returns 0, or 2
    with one message for a user error (a folder, the output, a video that is damaged or too short to measure). A
    video longer than the dataset's clips (a long stream) is scored against the motion continued past the clip (see
    :func:`score_video`)."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    return run_command(PROG, lambda: score_folder(args))
