"""PNG plots of the world experiments, drawn with Pillow (no matplotlib: CI stays light).

- :func:`line_plot` -- metric against chunk index, one line per variant, with a dashed line at a switch;
- :func:`frame_strip` -- rows of frames (one row per variant) around a switch, labelled; plain image tiling.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127))
"""Line colours, in series order."""


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def line_plot(path: Path, series: Mapping[str, Sequence[float]], *, title: str, xlabel: str, ylabel: str,
              vline: float | None = None, size: tuple[int, int] = (640, 400)) -> Path:
    """Lines ``series[name][x]`` against x = 0, 1, ...; NaNs leave gaps; ``vline`` draws a dashed marker."""
    w, h = size
    left, right, top, bottom = 60, 150, 30, 45
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = _font()
    values = [v for s in series.values() for v in s if v is not None and not math.isnan(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    n = max((len(s) for s in series.values()), default=1)
    x0, x1, y0, y1 = left, w - right, top, h - bottom

    def px(i: float) -> float:
        return x0 + (x1 - x0) * (i / max(1, n - 1))

    def py(v: float) -> float:
        return y1 - (y1 - y0) * (v - lo) / (hi - lo)

    d.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    for k in range(5):  # y ticks
        v = lo + (hi - lo) * k / 4
        d.line([x0 - 4, py(v), x0, py(v)], fill=(0, 0, 0))
        d.text((4, py(v) - 6), f"{v:.3g}", fill=(0, 0, 0), font=font)
    step = max(1, n // 10)
    for i in range(0, n, step):  # x ticks
        d.line([px(i), y1, px(i), y1 + 4], fill=(0, 0, 0))
        d.text((px(i) - 4, y1 + 6), str(i), fill=(0, 0, 0), font=font)
    if vline is not None:
        for y in range(int(y0), int(y1), 8):
            d.line([px(vline), y, px(vline), y + 4], fill=(120, 120, 120))
    for j, (name, s) in enumerate(series.items()):
        colour = COLOURS[j % len(COLOURS)]
        points = [(px(i), py(v)) if v is not None and not math.isnan(v) else None for i, v in enumerate(s)]
        for a, b in itertools.pairwise(points):
            if a is not None and b is not None:
                d.line([a, b], fill=colour, width=2)
        for p in points:
            if p is not None:
                d.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=colour)
        d.line([x1 + 10, y0 + 8 + 16 * j, x1 + 30, y0 + 8 + 16 * j], fill=colour, width=3)
        d.text((x1 + 34, y0 + 2 + 16 * j), name, fill=(0, 0, 0), font=font)
    d.text((x0, 8), title, fill=(0, 0, 0), font=font)
    d.text(((x0 + x1) // 2 - 30, h - 18), xlabel, fill=(0, 0, 0), font=font)
    d.text((4, 14), ylabel, fill=(80, 80, 80), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def frame_strip(path: Path, rows: Mapping[str, torch.Tensor], frames: Sequence[int], *, scale: int = 2,
                marker: int | Sequence[int] | None = None) -> Path:
    """One row per video (``[T, H, W, 3]`` in 0..1), the given frame indices side by side, labelled on the left;
    the frames ``marker`` (the first after each switch) are framed in red."""
    markers = set() if marker is None else {marker} if isinstance(marker, int) else set(marker)
    videos = list(rows.values())
    h, w = videos[0].shape[1] * scale, videos[0].shape[2] * scale
    label_w, gap, head = 110, 2, 14
    img = Image.new("RGB", (label_w + len(frames) * (w + gap), head + len(rows) * (h + gap)), "white")
    d = ImageDraw.Draw(img)
    font = _font()
    for j, f in enumerate(frames):
        d.text((label_w + j * (w + gap) + 2, 1), f"t={f}", fill=(0, 0, 0), font=font)
    for i, (name, video) in enumerate(rows.items()):
        y = head + i * (h + gap)
        d.text((2, y + h // 2 - 6), name, fill=(0, 0, 0), font=font)
        for j, f in enumerate(frames):
            if f >= video.shape[0]:
                continue
            tile = Image.fromarray((video[f].clamp(0, 1) * 255).round().byte().numpy()).resize((w, h), Image.NEAREST)
            x = label_w + j * (w + gap)
            img.paste(tile, (x, y))
            if f in markers:
                d.rectangle([x, y, x + w - 1, y + h - 1], outline=(220, 0, 0), width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _means(series: Sequence[Mapping[str, float]]) -> list[float]:
    return [row.get("mean", math.nan) for row in series]


def write_all(folder: Path, *, ex1: dict, ex2: dict, ex3: dict, ex4: torch.Tensor | None, switching: dict,
              long: dict) -> list[str]:
    """Every plot of the experiments into ``folder``; returns the file names. Strips show the *first* clips of
    each experiment (never chosen ones)."""
    written = []
    t = next(iter(ex1.values())).shape[0]
    picks = sorted({0, t // 4, t // 2, 3 * t // 4, t - 1})
    written.append(frame_strip(folder / "teacher_vs_untrained.png", ex1, picks))
    written.append(frame_strip(folder / "student_vs_teacher.png", ex2, picks))
    for n, strip in enumerate(ex3["strips"]):
        switch_frame = int(strip["switch_frame"])
        videos = {k: v for k, v in strip.items() if k not in ("key", "switch_frame")}
        last = min(v.shape[0] for v in videos.values()) - 1  # a switch that starts a new clip shows fewer frames
        frames = sorted({switch_frame - 12, switch_frame - 4, switch_frame - 1, switch_frame, switch_frame + 4,
                         switch_frame + 8, switch_frame + 12, switch_frame + 24, last})
        written.append(frame_strip(folder / f"switch_strip_{n}.png", videos, frames, marker=switch_frame))
    switch_chunk = int(switching["switch_chunk"])
    series = {v: _means(rows) for v, rows in switching["series"].items()}
    written.append(line_plot(folder / "switch_colour.png", series,
                             title=f"garment colour accuracy per chunk (vs the garment worn); switch before chunk "
                                   f"{switch_chunk}", xlabel="chunk", ylabel="colour accuracy",
                             vline=switch_chunk - 0.5))
    for key in ("garment_colour", "identity_error"):
        written.append(line_plot(folder / f"long_{key}.png", {"student": _means(long["series"][key])},
                                 title=f"long stream: {key} per chunk (training clip = {long['clip_chunks']} chunks)",
                                 xlabel="chunk", ylabel=key))
    if ex4 is not None:
        n = ex4.shape[0]
        written.append(frame_strip(folder / "long_strip.png", {"student": ex4},
                                   [int(i * (n - 1) / 9) for i in range(10)]))
    return [p.name for p in written]
