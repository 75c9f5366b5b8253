"""Exact metrics of the synthetic fashion world, and ``python -m chameleon_core.eval world``.

Every metric compares a generated video with the world's ground truth: the clip the renderer draws for the same
attributes (:func:`chameleon_core.world.render`), whose per-pixel labels say where the garment, the person and the
background are. Videos are ``[T, H, W, 3]`` float in 0..1; labels ``[T, H, W]`` (0 background, 1 skin, 2 hair,
3 trousers, 4 garment).

Every pixel is **classified** against the whole world palette (:func:`chameleon_core.world.catalog.palette`:
garment colours, the pattern mark, skins, hairs, walls, poles, trousers): its class is the nearest entry in RGB. The
renderer draws no other colour, so the ground truth classifies exactly, and a pixel off by less than half the
palette's separation (51/255) still classifies right. A pixel whose nearest entry is no garment colour and not the
mark is **not a garment**. All garment metrics count pixels *inside the ground-truth garment mask only*:

- **Garment colour accuracy** (the headline): among the ground-truth garment pixels that show the garment's colour
  (not its pattern marks), the fraction classified as the target colour. A wall-coloured or grey frame scores 0,
  a frame in another garment colour scores 0, the ground truth scores 1.
- **Leakage** (after a switch): among the ground-truth garment pixels, the fraction classified as the *old*
  garment's colour. **Not a garment**: the fraction classified as neither a garment colour nor the mark.
- **Pattern accuracy**: per frame, the predicted mark map inside the garment mask is compared with the mark maps
  of all four patterns drawn for that frame (same person, pose and garment); the frame's pattern is the one that
  agrees best; the score is the fraction of frames (with at least 12 garment pixels) where that is the target's.
- **Identity**: the fraction of ground-truth skin pixels classified as the person's skin colour and of hair pixels
  as their hair colour; **identity error** = 1 - the mean of the two (0 when the person is drawn exactly).
- **Motion trajectory** (:func:`motion_trajectory`): per frame, from the foreground (every pixel but the scene's:
  within 0.12 of the wall or pole colour and nearer to it than to any figure colour): centroid x and y, horizontal
  spread (std of x), top extent (5th percentile of y), all in frame units, and the poles' horizontal shift (phase
  of the pole pixels' columns at the poles' spacing in the frame, unwrapped over time). **Motion agreement**: the
  cosine similarity of the video's trajectory change from frame 0 with the ground truth's (flattened); 0 when either
  does not move. **Motion class**: the motion whose rendering (same person, garment and start) agrees best with
  the video.
- **Temporal jitter**: the mean absolute second difference over time ``|x[t+1] - 2 x[t] + x[t-1]|``.
- **Switch cut** at frame ``f``: the mean absolute change from frame ``f-1`` to ``f`` divided by the median change
  at the other frames where a new picture starts (the world is animated on fours), both outside the garment.
  About 1 for a seamless switch; large for a cut.

Videos too short to measure are refused (a ``ValueError`` naming the length): motion needs
:data:`MIN_MOTION_FRAMES` frames, a switch cut 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from functools import lru_cache
from pathlib import Path

import torch

from chameleon_core.checkpoints.errors import CheckpointError, check_regular_file
from chameleon_core.tools.command import UsageError, check_output_file, parse_args, run_command
from chameleon_core.world.catalog import BACKGROUND as WALLS
from chameleon_core.world.catalog import (
    GARMENT_COLOUR,
    MOTION,
    PATTERN,
    POLE,
    Garment,
    WorldSample,
    palette,
)
from chameleon_core.world.render import GARMENT_LABEL, HAIR_LABEL, SKIN_LABEL, pose_frame, render
from chameleon_core.world.render import FRAMING_ZOOM, POLE_SPACING

logger = logging.getLogger(__name__)

PROG = "python -m chameleon_core.eval world"
COLOURS = tuple(GARMENT_COLOUR)
MARK_CLASS = len(COLOURS)
"""Garment class of a pattern-mark pixel; garment colours are ``0 .. len(COLOURS) - 1``."""
NOT_GARMENT = len(COLOURS) + 1
"""Garment class of a pixel whose nearest palette entry is neither a garment colour nor the mark."""
MIN_GARMENT_PIXELS = 12
MIN_MOTION_FRAMES = 5
"""Frames a video needs for motion metrics (one causal VAE step: the first frame and four more)."""
FOREGROUND_DISTANCE = 0.12
CUT_EPS = 1e-4
FRAME_POLE_SPACING = POLE_SPACING * FRAMING_ZOOM
"""The poles' spacing in frame units: the renderer spaces them in figure units and the camera magnifies those by
:data:`~chameleon_core.world.render.FRAMING_ZOOM` (a phase taken at the unmagnified spacing aliases: it moved with
whichever poles the figure hid, and a static camera measured as a pan)."""


@lru_cache(maxsize=1)
def _palette_tensors() -> tuple[torch.Tensor, torch.Tensor, tuple]:
    entries = palette()
    rgb = torch.tensor([e.rgb for e in entries], dtype=torch.float32) / 255.0
    garment_class = [COLOURS.index(e.name) if e.kind == "garment" else MARK_CLASS if e.kind == "mark" else NOT_GARMENT
                     for e in entries]
    return rgb, torch.tensor(garment_class), entries


@lru_cache(maxsize=1)
def _figure_colours() -> torch.Tensor:
    """``[N, 3]`` in 0..1: every colour a figure is drawn in (garments, the mark, skins, hairs, trousers)."""
    rgb, _, entries = _palette_tensors()
    return rgb[[i for i, e in enumerate(entries) if e.kind not in ("wall", "pole")]]


def classify(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels ``[..., 3]`` in 0..1 -> the index of the nearest palette entry ``[...]`` (long)."""
    rgb, _, _ = _palette_tensors()
    x = pixels.reshape(-1, 3).float().cpu()
    # argmin |x - p|^2 = argmin (|p|^2 - 2 x.p): one small matmul instead of a distance matrix
    score = (rgb * rgb).sum(1) - 2.0 * x @ rgb.T  # [N, entries]
    return score.argmin(dim=1).reshape(pixels.shape[:-1])


def garment_classes(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels ``[..., 3]`` -> garment class ``[...]``: a garment colour's index in :data:`COLOURS`,
    :data:`MARK_CLASS` or :data:`NOT_GARMENT`."""
    _, garment_class, _ = _palette_tensors()
    return garment_class[classify(pixels)]


def _entry_index(kind: str, name: str) -> int:
    _, _, entries = _palette_tensors()
    for i, e in enumerate(entries):
        if e.kind == kind and e.name == name:
            return i
    raise ValueError(f"no {kind} colour named {name!r} in the world palette")


def _check(video: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(video, torch.Tensor) or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be [T, H, W, 3] float in 0..1, got {getattr(video, 'shape', type(video))}")
    if labels.shape != video.shape[:3]:
        raise ValueError(f"labels {tuple(labels.shape)} must match the video's [T, H, W] {tuple(video.shape[:3])}; "
                         "render the ground truth at the video's size and frame count")


def _ratio(hits: torch.Tensor, mask: torch.Tensor) -> float:
    n = int(mask.sum())
    return math.nan if n == 0 else int((hits & mask).sum()) / n


# --- garment ----------------------------------------------------------------------------------------------------


def garment_colour_pixels(truth: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[T, H, W]`` bool: ground-truth garment pixels that show the garment's colour (not a pattern mark)."""
    return (labels == GARMENT_LABEL) & (garment_classes(truth) < len(COLOURS))


def garment_colour_accuracy(video: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor, colour: str) -> float:
    """Garment colour accuracy over all frames (pixel-weighted; NaN without garment-colour pixels)."""
    _check(video, labels)
    return _ratio(garment_classes(video) == COLOURS.index(colour), garment_colour_pixels(truth, labels))


def garment_shares(video: torch.Tensor, labels: torch.Tensor, colours: dict[str, str]) -> dict[str, float]:
    """For each ``name -> colour``, the fraction of the ground-truth garment pixels classified as that colour, plus
    ``not_garment`` and ``mark`` (leakage is the old colour's share)."""
    _check(video, labels)
    cls = garment_classes(video)
    mask = labels == GARMENT_LABEL
    out = {name: _ratio(cls == COLOURS.index(c), mask) for name, c in colours.items()}
    out["not_garment"] = _ratio(cls == NOT_GARMENT, mask)
    out["mark"] = _ratio(cls == MARK_CLASS, mask)
    return out


def leakage(video: torch.Tensor, labels: torch.Tensor, old_colour: str) -> float:
    """Fraction of the ground-truth garment pixels classified as ``old_colour`` (the garment before a switch)."""
    return garment_shares(video, labels, {"old": old_colour})["old"]


def pattern_accuracy(video: torch.Tensor, labels: torch.Tensor, garment: Garment,
                     templates: dict[str, torch.Tensor]) -> float:
    """Fraction of frames whose mark map agrees best with ``garment.pattern`` (see the module docstring); NaN if no
    frame has enough garment pixels. ``templates``: pattern -> the ground truth's mark map ``[T, H, W]`` bool had
    the garment that pattern (:meth:`GroundTruth.mark_templates`)."""
    _check(video, labels)
    marks = garment_classes(video) == MARK_CLASS
    mask = labels == GARMENT_LABEL
    hits = counted = 0
    for i in range(video.shape[0]):
        m = mask[i]
        if int(m.sum()) < MIN_GARMENT_PIXELS:
            continue
        agree = {p: (tpl[i][m] == marks[i][m]).float().mean().item() for p, tpl in templates.items()}
        hits += max(agree, key=agree.get) == garment.pattern
        counted += 1
    return hits / counted if counted else math.nan


def _with_pattern(garment: Garment, pattern: str) -> Garment:
    return Garment(garment.kind, garment.colour, pattern, garment.sleeves)



# --- identity ---------------------------------------------------------------------------------------------------


def identity_scores(video: torch.Tensor, labels: torch.Tensor, sample: WorldSample) -> dict[str, float]:
    """``{"skin", "hair", "identity_error"}``: the fraction of ground-truth skin (hair) pixels classified as the
    person's skin (hair) colour, and 1 - their mean (NaN parts are left out)."""
    _check(video, labels)
    cls = classify(video)
    skin = _ratio(cls == _entry_index("skin", sample.identity.skin), labels == SKIN_LABEL)
    hair = _ratio(cls == _entry_index("hair", sample.identity.hair), labels == HAIR_LABEL)
    present = [v for v in (skin, hair) if not math.isnan(v)]
    return {"skin": skin, "hair": hair, "identity_error": 1.0 - sum(present) / len(present) if present else math.nan}


# --- motion and smoothness ----------------------------------------------------------------------------------------


def motion_trajectory(video: torch.Tensor, wall: tuple[int, int, int] | torch.Tensor) -> torch.Tensor:
    """``[T, 5]``: foreground centroid x, centroid y, horizontal spread, top extent, pole shift (frame units)."""
    t, h, w, _ = video.shape
    v = video.float().cpu()
    wall_rgb = torch.as_tensor(wall, dtype=torch.float32) / 255.0
    pole_rgb = wall_rgb * POLE
    d_wall = (v - wall_rgb).norm(dim=-1)
    d_pole = (v - pole_rgb).norm(dim=-1)
    # a scene pixel is near the wall or pole colour *and* nearer to it than to every colour of a figure: some
    # figure colours lie within FOREGROUND_DISTANCE of a pole colour (the trousers of a teal wall's), and a
    # threshold alone would count them as poles, so the poles' phase would follow the figure
    d_figure = torch.cdist(v.reshape(-1, 3), _figure_colours()).min(dim=1).values.reshape(v.shape[:-1])
    wall_px = (d_wall <= FOREGROUND_DISTANCE) & (d_wall < d_figure)
    pole_px = (d_pole <= FOREGROUND_DISTANCE) & (d_pole < d_figure)
    fg = (~(wall_px | pole_px)).float()  # [T, H, W]
    poles = pole_px.float()
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    n = fg.sum((1, 2))  # [T]
    safe = n.clamp(min=1)
    col, row = fg.sum(1), fg.sum(2)  # [T, W], [T, H]
    cx = (col * xs).sum(1) / safe
    cy = (row * ys).sum(1) / safe
    spread = ((col * xs**2).sum(1) / safe - cx**2).clamp(min=0).sqrt()
    # top extent: the first row at which 5% of the foreground lies above (the 5th percentile of y)
    reached = row.cumsum(1) >= 0.05 * n[:, None]
    top = ys[reached.float().argmax(1)]
    empty = n == 0
    cx, cy, spread, top = (torch.where(empty, torch.zeros_like(a), a) for a in (cx, cy, spread, top))
    cols = poles.sum(1)  # [T, W]
    angle = torch.atan2((cols * torch.sin(2 * math.pi * xs / FRAME_POLE_SPACING)).sum(1),
                        (cols * torch.cos(2 * math.pi * xs / FRAME_POLE_SPACING)).sum(1))
    step = torch.remainder(angle[1:] - angle[:-1] + math.pi, 2 * math.pi) - math.pi
    shift = torch.cat([torch.zeros(1), step.cumsum(0)]) * FRAME_POLE_SPACING / (2 * math.pi)
    return torch.stack([cx, cy, spread, top, shift], dim=1)


def _cosine_of_change(a: torch.Tensor, b: torch.Tensor) -> float:
    da, db = (a - a[:1]).flatten(), (b - b[:1]).flatten()
    na, nb = da.norm().item(), db.norm().item()
    if na < 1e-6 or nb < 1e-6:
        return 0.0
    return float(torch.dot(da, db).item() / (na * nb))


def _check_motion_length(t: int) -> None:
    if t < MIN_MOTION_FRAMES:
        raise ValueError(f"the video has {t} frame(s), too few to measure: motion needs at least {MIN_MOTION_FRAMES} "
                         "frames (the first frame and one four-frame picture); score a longer video (the world's "
                         "clips have 33)")


def motion_agreement(video: torch.Tensor, truth: torch.Tensor, wall: tuple[int, int, int]) -> float:
    """Cosine similarity of the video's and the ground truth's trajectory change from frame 0 (-1..1; 0 if either
    is still)."""
    if video.shape[0] != truth.shape[0]:
        raise ValueError(f"video has {video.shape[0]} frames but the ground truth {truth.shape[0]}; they must match")
    _check_motion_length(video.shape[0])
    return _cosine_of_change(motion_trajectory(video, wall), motion_trajectory(truth, wall))


def motion_scores(video: torch.Tensor, truth: GroundTruth) -> dict[str, float]:
    """Agreement of ``video`` with each motion rendered for the same person, garment, start and size."""
    _check_motion_length(video.shape[0])
    traj = motion_trajectory(video, truth.wall)
    return {m: _cosine_of_change(traj, other) for m, other in truth.motion_trajectories().items()}


def temporal_jitter(video: torch.Tensor) -> float:
    """Mean absolute second temporal difference of the pixels (0 for fewer than 3 frames)."""
    if video.shape[0] < 3:
        return 0.0
    v = video.float()
    return (v[2:] - 2 * v[1:-1] + v[:-2]).abs().mean().item()


def picture_boundaries(frames: int) -> list[int]:
    """The frames at which the world shows a new picture (it is animated on fours: frame 1, 5, 9, ...)."""
    return [t for t in range(1, frames) if pose_frame(t) != pose_frame(t - 1)]


def switch_cut(video: torch.Tensor, switch_frame: int, keep: torch.Tensor | None = None,
               boundaries: list[int] | None = None) -> float:
    """Change across the switch (frame ``switch_frame - 1`` -> ``switch_frame``) over the median change at the
    ``boundaries`` before it (frames where a new picture starts; every frame if None), within ``keep`` (``[T, H, W]``
    bool; pixels compared between frames t-1 and t are those kept in both; all pixels if None)."""
    t = video.shape[0]
    if t < 3:
        raise ValueError(f"a switch cut needs at least 3 frames (one ordinary change), got {t}")
    if not 1 <= switch_frame < t:
        raise ValueError(f"switch_frame must be in 1..{t - 1} for a {t}-frame video, got {switch_frame}")
    frames = sorted(set(boundaries if boundaries is not None else range(1, t)) | {switch_frame})
    if len(frames) < 2:
        raise ValueError(f"a switch cut needs an ordinary change besides the switch; {t} frames have none")
    v = video.float()
    changes = {}
    for i in frames:
        diff = (v[i] - v[i - 1]).abs().mean(-1)  # [H, W]
        if keep is not None:
            both = keep[i] & keep[i - 1]
            changes[i] = diff[both].mean().item() if bool(both.any()) else 0.0
        else:
            changes[i] = diff.mean().item()
    # ordinary changes: before the switch (what every variant of a stream shares; a restarted stream's own pictures
    # start a frame later, so its later boundaries would not be comparable), or after it when there are none before
    before = [c for i, c in changes.items() if i < switch_frame]
    ordinary = torch.tensor(before or [c for i, c in changes.items() if i != switch_frame]).median().item()
    return changes[switch_frame] / max(ordinary, CUT_EPS)


# --- everything at once -------------------------------------------------------------------------------------------


class GroundTruth:
    """The ground truth of one world video, rendered once and scored against many videos (the variants of one
    experiment share it): frames, labels, and what the metrics derive from them (pattern templates, the
    trajectories of every motion), each computed when first needed."""

    def __init__(self, sample: WorldSample, *, size: int, frames: int, switch_to: Garment | None = None,
                 switch_frame: int | None = None) -> None:
        if (switch_to is None) != (switch_frame is None):
            raise ValueError("a switch needs both switch_to (the new garment) and switch_frame (its first frame)")
        _check_motion_length(frames)
        if switch_frame is not None and not 1 <= switch_frame < frames:
            raise ValueError(f"the switch frame {switch_frame} is not inside the {frames}-frame video; it must be in "
                             f"1..{frames - 1}")
        self.sample, self.size, self.frames = sample, size, frames
        self.switch_to, self.switch_frame = switch_to, switch_frame
        rendered = render(sample, size=size, frames=frames, switch_to=switch_to, switch_frame=switch_frame)
        self.video, self.labels = rendered.float_frames(), rendered.labels
        self.wall = WALLS[sample.identity.background]
        self._templates: dict[tuple, dict[str, torch.Tensor]] = {}
        self._motions: dict[str, torch.Tensor] | None = None

    @property
    def target(self) -> Garment:
        """The garment worn from the switch on (the whole video without a switch)."""
        return self.switch_to or self.sample.garment

    def mark_templates(self, garment: Garment) -> dict[str, torch.Tensor]:
        """Pattern -> the mark map ``[T, H, W]`` the ground truth would show with ``garment`` in that pattern."""
        key = (garment.kind, garment.colour, garment.sleeves)
        if key not in self._templates:
            self._templates[key] = {
                p: garment_classes(render(self.sample, size=self.size, frames=self.frames,
                                          garment=Garment(garment.kind, garment.colour, p, garment.sleeves))
                                   .float_frames()) == MARK_CLASS
                for p in PATTERN
            }
        return self._templates[key]

    def motion_trajectories(self) -> dict[str, torch.Tensor]:
        """Motion -> the trajectory of that motion drawn for the same person, garment and start."""
        if self._motions is None:
            s = self.sample
            self._motions = {m: motion_trajectory(render(WorldSample(s.identity, s.garment, m, s.reference_garment,
                                                                     s.phase), size=self.size, frames=self.frames)
                                                  .float_frames(), self.wall) for m in MOTION}
        return self._motions


def score_video(video: torch.Tensor, sample: WorldSample | GroundTruth, *, switch_to: Garment | None = None,
                switch_frame: int | None = None) -> dict[str, float]:
    """All world metrics of one generated video ``[T, H, W, 3]`` (0..1) of ``sample`` from its start on (or
    against a :class:`GroundTruth` built once for many videos). With a switch, garment metrics are measured from
    ``switch_frame`` on against ``switch_to`` (``garment_colour_before``: before it, against the first garment),
    and leakage and the cut at the switch are added."""
    if not isinstance(video, torch.Tensor) or video.ndim != 4 or video.shape[-1] != 3 or video.shape[1] != video.shape[2]:
        raise ValueError(f"video must be square frames [T, H, H, 3] in 0..1 (the world's), got "
                         f"{tuple(getattr(video, 'shape', ()))}")
    t, h = video.shape[0], video.shape[1]
    if isinstance(sample, GroundTruth):
        gt = sample
        if (gt.frames, gt.size) != (t, h):
            raise ValueError(f"the ground truth has {gt.frames} frames of {gt.size}px but the video {t} of {h}px")
    else:
        gt = GroundTruth(sample, size=h, frames=t, switch_to=switch_to, switch_frame=switch_frame)
    truth, labels, target = gt.video, gt.labels, gt.target
    first = gt.switch_frame or 0
    part = slice(first, t)
    out: dict[str, float] = {}
    out["garment_colour"] = garment_colour_accuracy(video[part], truth[part], labels[part], target.colour)
    templates = {p: tpl[part] for p, tpl in gt.mark_templates(target).items()}
    out["garment_pattern"] = pattern_accuracy(video[part], labels[part], target, templates)
    out["not_garment"] = garment_shares(video[part], labels[part], {})["not_garment"]
    if gt.switch_to is not None:
        before = slice(0, first)
        out["garment_colour_before"] = garment_colour_accuracy(video[before], truth[before], labels[before],
                                                               gt.sample.garment.colour)
        out["leakage"] = leakage(video[part], labels[part], gt.sample.garment.colour)
        out["switch_cut"] = switch_cut(video, first, keep=labels != GARMENT_LABEL, boundaries=picture_boundaries(t))
    ident = identity_scores(video, labels, gt.sample)
    out.update({"identity_skin": ident["skin"], "identity_hair": ident["hair"],
                "identity_error": ident["identity_error"]})
    out["motion_agreement"] = motion_agreement(video, truth, gt.wall)
    scores = motion_scores(video, gt)
    out["motion_correct"] = float(max(scores, key=scores.get) == gt.sample.motion)
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
            scores = score_video(video, meta["sample"], **switch)
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
    video longer than the dataset's clips (a long stream) is scored against the motion continued past the clip."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    return run_command(PROG, lambda: score_folder(args))
