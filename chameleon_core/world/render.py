"""Rendering the world: a :class:`~.catalog.WorldSample` -> frames and exact per-pixel labels.

A figure is a union of simple shapes evaluated at pixel centres (no antialiasing), so every pixel has exactly one
label and its colour is exactly one palette colour (garment pattern marks are the near-white mark, background poles
the wall colour times a fixed shade). Geometry is in frame-height units, so any size renders the same picture.

Drawing order (later shapes cover earlier ones): wall and poles, legs (trousers), torso garment (shirt to the hips,
dress flared to the knees), arms (skin) with sleeves (garment) from the shoulder, neck, head (skin), hair (the top of
the head). Garment patterns are drawn in the figure's own coordinates, so they move and squash with it.

Motions, with ``p = (phase + pose_frame(t)) / MOTION_CYCLE`` the motion's clock at frame ``t`` of a clip
(``phase``: the sample's start on that clock; :func:`pose_frame`: the world is animated on fours, one pose per
latent frame). Each motion goes once round a loop per unit of ``p``, moving two things a quarter period apart, so a
single frame shows where in the loop the figure is and which way it moves next (no motion is ambiguous from one
frame):

- ``walk``: the figure walks a loop: across (x = 0.5 + 0.14 sin) and to and from the camera (size 1 + 0.1 cos);
  legs swing +-0.35 rad twice per loop, arms against them.
- ``turn``: the width scales by ``0.7 + 0.3 cos`` (turns sideways and back) while the figure steps 0.05 sin aside.
- ``sway``: x = 0.5 + 0.07 sin and a bob of 0.035 cos, arms slightly out.
- ``raise_arms``: the left arm rises and falls (1 - cos), the right a quarter period later (1 - sin).
- ``pan``: the camera circles: the figure and the background poles shift by 0.15 sin, the figure bobs 0.035 cos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .catalog import (
    BACKGROUND as WALLS,
)
from .catalog import (
    FRAMES,
    GARMENT_COLOUR,
    HAIR,
    MARK,
    MOTION_CYCLE,
    POLE,
    SIZE,
    SKIN,
    TROUSERS,
    Garment,
    WorldSample,
)

#: Label values of :attr:`Rendered.labels`; the three masks are unions of these.
BACKGROUND, SKIN_LABEL, HAIR_LABEL, TROUSERS_LABEL, GARMENT_LABEL = 0, 1, 2, 3, 4
BODY_LABELS = (SKIN_LABEL, HAIR_LABEL, TROUSERS_LABEL)

TORSO_HALF_WIDTH = {"slim": 0.105, "medium": 0.125, "broad": 0.145}
#: Head half-axes (x, y) and superellipse exponent per face shape.
FACE_SHAPE = {"round": (0.08, 0.08, 2.0), "oval": (0.066, 0.094, 2.0), "square": (0.074, 0.082, 5.0)}
SLEEVE_FRACTION = {"sleeveless": 0.0, "short": 0.38, "long": 0.92}
PATTERN_PERIOD = 0.17
"""Pattern period in figure units: 16 pixels at 64 x 64 with :data:`FRAMING_ZOOM`, one latent cell of the world's
16x codec (stripes and checks alternate every 8 pixels, dots have a 5-pixel radius)."""
FRAMING_ZOOM, FRAMING_CENTRE_Y = 1.5, 0.40
"""The camera: frames show the figure magnified 1.5x about (0.5, 0.40) in figure units, from the top of the hair
to mid-thigh (a dress is cut above the knee), so the garment spans several latent cells of the 16x codec."""
POLE_SPACING, POLE_WIDTH = 0.34, 0.05

HEAD_Y, SHOULDER_Y, HIP_Y, KNEE_Y, GROUND_Y = 0.16, 0.285, 0.58, 0.78, 0.95
FIGURE_Y = 0.4
"""Where the figure's size changes about (walking to and from the camera)."""
ARM_LENGTH, ARM_RADIUS, LEG_RADIUS = 0.29, 0.045, 0.045


@dataclass(frozen=True)
class Pose:
    """Where and how the figure stands in one frame."""

    cx: float = 0.5
    """Figure centre x (frame-height units; the frame is [0, 1] square)."""
    sx: float = 1.0
    """Horizontal scale (turning)."""
    arm_left: float = 0.15
    arm_right: float = 0.15
    """Arm angles from hanging straight down, outwards positive (radians)."""
    leg_left: float = 0.0
    leg_right: float = 0.0
    """Leg swing angles (radians)."""
    camera: float = 0.0
    """Camera x offset: shifts the background poles (the figure's ``cx`` already includes it)."""
    cy: float = 0.0
    """Vertical offset of the figure (frame units, down positive)."""
    scale: float = 1.0
    """Figure size (walking towards the camera and away)."""


def pose_at(motion: str, t: int) -> Pose:
    """The pose of ``motion`` at frame ``t`` of its clock (see the module docstring). Every motion goes once round a
    loop per :data:`MOTION_CYCLE` frames, moving two things a quarter period apart, so one frame's pose says where
    in the loop the figure is and which way it goes next: a stream can continue a motion from any single frame (the
    new reference after a garment switch) without guessing a direction."""
    a = 2 * math.pi * t / MOTION_CYCLE
    if motion == "walk":
        swing = 0.35 * math.sin(2 * a)
        return Pose(cx=0.5 + 0.14 * math.sin(a), scale=1.0 + 0.1 * math.cos(a), leg_left=swing, leg_right=-swing,
                    arm_left=0.15 - 0.6 * swing, arm_right=0.15 + 0.6 * swing)
    if motion == "turn":
        return Pose(sx=0.7 + 0.3 * math.cos(a), cx=0.5 + 0.05 * math.sin(a))
    if motion == "sway":
        return Pose(cx=0.5 + 0.07 * math.sin(a), cy=0.035 * math.cos(a), arm_left=0.3, arm_right=0.3)
    if motion == "raise_arms":
        return Pose(arm_left=0.15 + (math.pi - 0.6) * (0.5 - 0.5 * math.cos(a)),
                    arm_right=0.15 + (math.pi - 0.6) * (0.5 - 0.5 * math.sin(a)))
    if motion == "pan":
        shift = 0.15 * math.sin(a)
        return Pose(cx=0.5 + shift, camera=shift, cy=0.035 * math.cos(a))
    raise ValueError(f"unknown motion {motion!r}; choose one of walk, turn, sway, raise_arms, pan")


def pose_frame(t: int) -> int:
    """The motion-clock frame that frame ``t`` of a clip shows: the world is animated *on fours*, each pose held
    for the four frames that the VAE folds into one latent frame (frame 0, the causal VAE's lone first frame, has
    its own): 0, 4, 4, 4, 4, 8, 8, 8, 8, ... So every latent frame holds one picture, the codec's 4x temporal
    compression loses nothing, and motion still advances every latent frame (the stream's unit)."""
    return 4 * ((t + 3) // 4)


@dataclass(frozen=True)
class Rendered:
    """A rendered clip. ``frames`` uint8 ``[T, H, W, 3]``; ``labels`` uint8 ``[T, H, W]`` (values above)."""

    frames: torch.Tensor
    labels: torch.Tensor

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """``garment``, ``body`` (skin, hair, trousers) and ``background``: bool ``[T, H, W]``, a partition."""
        return masks_of(self.labels)

    def float_frames(self) -> torch.Tensor:
        """``[T, H, W, 3]`` float in 0..1."""
        return self.frames.float() / 255.0


def masks_of(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Label map ``[..., H, W]`` -> the three region masks (bool, same shape), which partition it."""
    body = (labels == SKIN_LABEL) | (labels == HAIR_LABEL) | (labels == TROUSERS_LABEL)
    return {"garment": labels == GARMENT_LABEL, "body": body, "background": labels == BACKGROUND}


# --- shapes ---------------------------------------------------------------------------------------------------------


def _capsule(x: np.ndarray, y: np.ndarray, x0: float, y0: float, x1: float, y1: float, r: float) -> np.ndarray:
    """Pixels within ``r`` of the segment (x0, y0)-(x1, y1); also returns the position along it (0..1)."""
    dx, dy = x1 - x0, y1 - y0
    s = np.clip(((x - x0) * dx + (y - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    inside = (x - x0 - s * dx) ** 2 + (y - y0 - s * dy) ** 2 <= r * r
    return inside, s


def _pattern_marks(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where a pattern's dark marks are, at garment coordinates ``(u, v)`` (frame-height units)."""
    q = PATTERN_PERIOD
    if pattern == "plain":
        return np.zeros(u.shape, bool)
    if pattern == "stripes":  # horizontal stripes
        return np.floor(v / (q / 2)) % 2 == 1
    if pattern == "checks":
        return (np.floor(u / (q / 2)) + np.floor(v / (q / 2))) % 2 == 1
    if pattern == "dots":
        du, dv = (u % q) - q / 2, (v % q) - q / 2
        return du * du + dv * dv <= (0.3 * q) ** 2
    raise ValueError(f"unknown pattern {pattern!r}; choose one of plain, stripes, checks, dots")


def _draw(sample: WorldSample, garment: Garment, pose: Pose, size: int, *, figure_only: bool = False,
          zoom: float = FRAMING_ZOOM, centre_y: float = FRAMING_CENTRE_Y) -> tuple[np.ndarray, np.ndarray]:
    """One frame -> (labels uint8 [H, W], dark bool [H, W]); ``dark`` marks pattern marks and background poles.

    ``figure_only`` draws the garment alone (the try-off image); ``zoom`` / ``centre_y``: the camera, magnifying
    the figure about ``(0.5, centre_y)`` (default: the world's framing)."""
    idx = (np.arange(size) + 0.5) / size
    y, x = np.meshgrid(idx, idx, indexing="ij")
    x, y = 0.5 + (x - 0.5) / zoom, centre_y + (y - 0.5) / zoom
    ident = sample.identity
    labels = np.zeros((size, size), np.uint8)
    dark = np.zeros((size, size), bool)
    if not figure_only:
        dark |= ((x - pose.camera) % POLE_SPACING) < POLE_WIDTH  # poles on the wall (background)
    # figure coordinates: horizontal offset from the centre, unsquashed; vertical about the figure's middle
    fx = (x - pose.cx) / (pose.sx * pose.scale)
    y = FIGURE_Y + (y - FIGURE_Y - pose.cy) / pose.scale
    tw = TORSO_HALF_WIDTH[ident.body]
    garment_px = np.zeros((size, size), bool)
    if not figure_only:
        for side, angle in ((-1, pose.leg_left), (1, pose.leg_right)):
            hx = side * tw * 0.45
            leg, _ = _capsule(fx, y, hx, HIP_Y - 0.02, hx + math.sin(angle) * (GROUND_Y - HIP_Y),
                              HIP_Y - 0.02 + math.cos(angle) * (GROUND_Y - HIP_Y), LEG_RADIUS)
            labels[leg] = TROUSERS_LABEL
    # torso garment: shirt to the hips, dress flared to the knees
    bottom = HIP_Y if garment.kind == "shirt" else KNEE_Y
    frac = np.clip((y - SHOULDER_Y) / (HIP_Y - SHOULDER_Y), 0, None)
    half = np.where(y <= HIP_Y, tw, tw * (1 + 0.9 * (y - HIP_Y) / (KNEE_Y - HIP_Y)))
    torso = (y >= SHOULDER_Y) & (y <= bottom) & (np.abs(fx) <= half * (0.92 + 0.08 * np.minimum(frac, 1)))
    garment_px |= torso
    # arms: skin capsules, the sleeve part garment
    sleeve = SLEEVE_FRACTION[garment.sleeves]
    arm_skin = np.zeros((size, size), bool)
    for side, angle in ((-1, pose.arm_left), (1, pose.arm_right)):
        sx0, sy0 = side * (tw + 0.01), SHOULDER_Y + 0.025
        ex, ey = sx0 + side * math.sin(angle) * ARM_LENGTH, sy0 + math.cos(angle) * ARM_LENGTH
        arm, s = _capsule(fx, y, sx0, sy0, ex, ey, ARM_RADIUS)
        in_sleeve = arm & (s <= sleeve) if sleeve > 0 else np.zeros_like(arm)
        garment_px |= in_sleeve
        arm_skin |= arm & ~in_sleeve
    if not figure_only:
        labels[arm_skin] = SKIN_LABEL
    labels[garment_px] = GARMENT_LABEL
    u, v = fx, y - SHOULDER_Y
    dark[garment_px] = _pattern_marks(garment.pattern, u, v)[garment_px]
    if not figure_only:
        labels[arm_skin & ~garment_px] = SKIN_LABEL
        neck = (np.abs(fx) <= 0.036) & (y >= HEAD_Y) & (y <= SHOULDER_Y + 0.005)
        labels[neck] = SKIN_LABEL
        rx, ry, e = FACE_SHAPE[ident.face]
        head = (np.abs(fx / rx) ** e + np.abs((y - HEAD_Y) / ry) ** e) <= 1
        labels[head] = SKIN_LABEL
        hair = head & (y <= HEAD_Y - 0.1 * ry)
        hair |= (np.abs(fx / (rx * 1.12)) ** e + np.abs((y - HEAD_Y) / (ry * 1.12)) ** e <= 1) & (y <= HEAD_Y - 0.1 * ry)
        labels[hair] = HAIR_LABEL
        dark &= (labels == BACKGROUND) | (labels == GARMENT_LABEL)
    else:
        dark &= labels == GARMENT_LABEL
    return labels, dark


def _colours(sample: WorldSample, garment: Garment, labels: np.ndarray, dark: np.ndarray,
             figure_only: bool = False) -> np.ndarray:
    ident = sample.identity
    palette = np.array([(255, 255, 255) if figure_only else WALLS[ident.background], SKIN[ident.skin],
                        HAIR[ident.hair], TROUSERS, GARMENT_COLOUR[garment.colour]], np.float64)
    rgb = palette[labels]
    marked = np.where(labels[..., None] == GARMENT_LABEL, np.array(MARK, np.float64), rgb * POLE)
    rgb = np.where(dark[..., None], marked, rgb)
    return np.rint(rgb).astype(np.uint8)


def render(sample: WorldSample, *, size: int = SIZE, frames: int = FRAMES, garment: Garment | None = None,
           switch_to: Garment | None = None, switch_frame: int | None = None) -> Rendered:
    """Render ``frames`` frames of ``sample`` from its ``phase`` on (wearing ``garment`` if given, else
    ``sample.garment``); any length continues the motion (a long stream's ground truth).

    With ``switch_to`` and ``switch_frame``: frames ``< switch_frame`` wear the first garment, frames
    ``>= switch_frame`` wear ``switch_to`` (identity, motion and camera are unchanged: the ground truth of a
    garment switch)."""
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if frames < 1:
        raise ValueError(f"frames must be positive (4k+1 for the codec), got {frames}")
    if (switch_to is None) != (switch_frame is None):
        raise ValueError("a switch needs both switch_to (the new garment) and switch_frame (its first frame)")
    if switch_frame is not None and not 0 <= switch_frame <= frames:
        raise ValueError(f"switch_frame must be in 0..{frames} for a {frames}-frame clip, got {switch_frame}")
    first = garment or sample.garment
    out_rgb, out_labels = [], []
    for t in range(frames):
        g = switch_to if switch_to is not None and t >= switch_frame else first
        labels, dark = _draw(sample, g, pose_at(sample.motion, sample.phase + pose_frame(t)), size)
        out_rgb.append(_colours(sample, g, labels, dark))
        out_labels.append(labels)
    return Rendered(torch.from_numpy(np.stack(out_rgb)), torch.from_numpy(np.stack(out_labels)))


def render_reference(sample: WorldSample, *, size: int = SIZE) -> Rendered:
    """The reference image: the clip's first frame (the pose at ``sample.phase``), re-dressed in
    ``sample.reference_garment`` (T = 1)."""
    return render(sample, size=size, frames=1, garment=sample.reference_garment)


def render_garment_on_white(garment: Garment, *, size: int = SIZE) -> torch.Tensor:
    """The try-off image: the garment alone, flat (arms slightly out), magnified 1.5x and centred; RGBA uint8
    ``[H, W, 4]``, white with alpha 0 outside the garment."""
    from .catalog import Identity

    neutral = WorldSample(Identity("pale", "black", "round", "medium", "sage"), garment, "turn", garment)
    centre = (SHOULDER_Y + (HIP_Y if garment.kind == "shirt" else KNEE_Y)) / 2
    labels, dark = _draw(neutral, garment, Pose(arm_left=0.45, arm_right=0.45), size, figure_only=True, zoom=1.6,
                         centre_y=centre)
    rgb = _colours(neutral, garment, labels, dark, figure_only=True)
    alpha = np.where(labels == GARMENT_LABEL, 255, 0).astype(np.uint8)
    return torch.from_numpy(np.concatenate([rgb, alpha[..., None]], axis=-1))
