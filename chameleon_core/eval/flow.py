"""Weight-free video metrics from dense optical flow (OpenCV's Farneback): motion, warping error, smoothness.

All functions take uint8 RGB frames ``[H, W, 3]`` (or ``[F, H, W, 3]``) and measure at the size given; the caller
shrinks large videos first (:func:`.videos.resize_longest`), so pixel numbers are at that size.

- **Flow** ``f = optical_flow(a, b)`` (``[H, W, 2]``, x then y, pixels) maps frame ``a`` onto ``b``:
  ``a[y, x] ~ b[y + f_y, x + f_x]``. Farneback (OpenCV ``calcOpticalFlowFarneback``) is a classical polynomial-
  expansion method: no weights, deterministic, good to a fraction of a pixel on textured regions.
- **Motion**: mean flow magnitude over the frame, per consecutive pair.
- **Warping error** (as in Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018): warp ``b`` back to
  ``a`` by the flow and take the mean absolute RGB difference (0..1) over pixels that are not occluded, where
  occlusion is the forward-backward consistency test of Sundaram et al. (ECCV 2010):
  ``|f(x) + g(x + f(x))|^2 < 0.01 (|f|^2 + |g|^2) + 0.5`` with ``g`` the backward flow. The fraction of pixels that
  fail it is reported too: a hard cut fails it almost everywhere.
- **Smoothness** (weight-free counterpart of VBench's motion smoothness, which uses a learned frame interpolator):
  each inner frame ``t`` is predicted from ``t - 1`` and ``t + 1`` alone by flow-compensated midpoint interpolation
  (flow ``F`` from ``t - 1`` to ``t + 1``, backward flow ``G``; prediction ``0.5 (I_{t-1}(x - F/2) + I_{t+1}(x - G/2))``),
  and the score is ``1 - mean |prediction - I_t|`` over the whole frame (RGB 0..1). A frozen video scores 1, steady
  motion close to 1, a jerk or a cut markedly less at that frame.
- **Sharpness** (a weight-free image-quality proxy, not a perceptual quality model): the variance of the Laplacian
  of the grey frame (0..1 units), averaged over frames. It falls with blur and rises with noise, so compare it only
  between videos of similar content and size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FARNEBACK = {"pyr_scale": 0.5, "levels": 4, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0}
"""OpenCV's documented example settings, with 4 pyramid levels so motions up to ~20 px at 256 px are followed."""
CONSISTENCY_ALPHA = 0.01
CONSISTENCY_BETA = 0.5
TOP_FRACTION = 0.05
"""Share of the largest flow magnitudes averaged for ``motion_top_px`` (the moving part of a mostly still frame)."""


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError("the optical-flow metrics need OpenCV: pip install opencv-python-headless") from None
    return cv2


def grey(frame: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> ``[H, W]`` uint8 luma."""
    return _cv2().cvtColor(frame, _cv2().COLOR_RGB2GRAY)


def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow from frame ``a`` to frame ``b`` (uint8 RGB ``[H, W, 3]``) -> float32 ``[H, W, 2]`` (x, y)."""
    if np.array_equal(a, b):  # identical frames: exactly no motion (Farneback leaves ~1e-3 px of noise)
        return np.zeros((*a.shape[:2], 2), np.float32)
    return _cv2().calcOpticalFlowFarneback(grey(a), grey(b), None, **FARNEBACK)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at ``x + flow(x)`` (bilinear, edges replicated) -> float32, same channels as ``image``."""
    cv2 = _cv2()
    xs, ys = _grid(*flow.shape[:2])
    return cv2.remap(image.astype(np.float32), xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def consistent(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Forward-backward consistency mask ``[H, W]`` bool: True where the forward flow is trusted (not occluded and
    landing inside the frame)."""
    h, w = forward.shape[:2]
    xs, ys = _grid(h, w)
    back = warp(backward, forward)  # g(x + f(x))
    total = forward + back
    ok = (total**2).sum(-1) < CONSISTENCY_ALPHA * ((forward**2).sum(-1) + (back**2).sum(-1)) + CONSISTENCY_BETA
    tx, ty = xs + forward[..., 0], ys + forward[..., 1]
    return ok & (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)


@dataclass(frozen=True)
class PairMotion:
    """Flow statistics of one consecutive frame pair."""

    motion_px: float
    """Mean flow magnitude over the frame, pixels per frame."""
    motion_top_px: float
    """Mean of the largest ``TOP_FRACTION`` of flow magnitudes."""
    warp_error: float
    """Mean |a - warp(b)| over consistent pixels, RGB 0..1 (0 where no pixel is consistent; see ``occluded``)."""
    occluded: float
    """Fraction of pixels failing the forward-backward test."""


def pair_motion(a: np.ndarray, b: np.ndarray) -> PairMotion:
    forward, backward = optical_flow(a, b), optical_flow(b, a)
    magnitude = np.linalg.norm(forward, axis=-1).ravel()
    top = np.sort(magnitude)[-max(1, round(TOP_FRACTION * magnitude.size)):]
    mask = consistent(forward, backward)
    diff = np.abs(a.astype(np.float32) - warp(b, forward)).mean(-1) / 255.0
    warp_error = float(diff[mask].mean()) if mask.any() else 0.0
    return PairMotion(float(magnitude.mean()), float(top.mean()), warp_error, float(1.0 - mask.mean()))


def midpoint_error(before: np.ndarray, middle: np.ndarray, after: np.ndarray) -> float:
    """Mean |flow-interpolated midpoint of ``before`` and ``after`` - ``middle``| (RGB 0..1, whole frame)."""
    forward, backward = optical_flow(before, after), optical_flow(after, before)
    predicted = 0.5 * (warp(before, -0.5 * forward) + warp(after, -0.5 * backward))
    return float(np.abs(predicted - middle.astype(np.float32)).mean() / 255.0)


def sharpness(frames: np.ndarray) -> float:
    """Mean variance of the Laplacian of the grey frames (0..1 units); see the module docstring."""
    cv2 = _cv2()
    return float(np.mean([cv2.Laplacian(grey(f).astype(np.float32) / 255.0, cv2.CV_32F, ksize=3).var()
                          for f in frames]))


@dataclass(frozen=True)
class VideoMotion:
    pairs: list[PairMotion]
    """One per consecutive pair (F - 1)."""
    midpoint_errors: list[float]
    """One per inner frame (F - 2); index i is frame i + 1."""

    def summary(self, diagonal: float) -> dict[str, float | int | None]:
        """The per-video numbers (``diagonal``: the measured frame's diagonal in pixels)."""
        motion = float(np.mean([p.motion_px for p in self.pairs]))
        warp_errors = [p.warp_error for p in self.pairs]
        mid = self.midpoint_errors
        return {
            "motion_px": motion,
            "motion_pct_diagonal": 100.0 * motion / diagonal,
            "motion_top_px": float(np.mean([p.motion_top_px for p in self.pairs])),
            "warp_error": float(np.mean(warp_errors)),
            "warp_error_max": float(np.max(warp_errors)),
            "warp_error_max_pair": int(np.argmax(warp_errors)),
            "occluded": float(np.mean([p.occluded for p in self.pairs])),
            "smoothness": 1.0 - float(np.mean(mid)) if mid else None,
            "smoothness_min": 1.0 - float(np.max(mid)) if mid else None,
            "smoothness_min_frame": int(np.argmax(mid)) + 1 if mid else None,
        }

    def series(self) -> dict[str, list[float]]:
        """Per-pair ``motion_px`` and ``warp_error``, and per-inner-frame ``smoothness`` (frame i + 1 at index i):
        where in the video a cut or a garment switch jumps."""
        return {"motion_px": [p.motion_px for p in self.pairs], "warp_error": [p.warp_error for p in self.pairs],
                "smoothness": [1.0 - e for e in self.midpoint_errors]}


def video_motion(frames: np.ndarray) -> VideoMotion:
    """Flow statistics of every consecutive pair and the midpoint error of every inner frame of ``[F, H, W, 3]``."""
    pairs = [pair_motion(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    mids = [midpoint_error(frames[i - 1], frames[i], frames[i + 1]) for i in range(1, len(frames) - 1)]
    return VideoMotion(pairs, mids)
