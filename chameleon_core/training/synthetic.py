"""A tiny synthetic training set in FashionChameleon's layout (real mp4 files via PyAV, PNGs with alpha, a CSV), for
the training tests and the training benchmark. Random pixels: it exercises the pipeline, it teaches nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_video(path: Path, frames: int, width: int, height: int, seed: int) -> None:
    import av

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(base, 2 * i, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_dataset(root: Path, clips: int = 4, frames: int = 9, width: int = 48, height: int = 64) -> Path:
    """``clips`` rows of ``frames`` frames; returns the CSV path."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(clips):
        stem = f"clip{i}"
        write_video(root / f"{stem}.mp4", frames, width, height, seed=i)
        rng = np.random.default_rng(100 + i)
        Image.fromarray(rng.integers(0, 255, (80, 60, 3), dtype=np.uint8)).save(root / f"{stem}_src.png")
        Image.fromarray(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8)).save(root / f"{stem}_cloth.png")
        caption = {"en_long": [f"a person walks and turns {i}", "wearing a red shirt"], "cn_short": ["x", "y"]}
        rows.append({"video": f"{stem}.mp4", "prompt": json.dumps(caption), "width": width, "height": height})
    path = root / "train.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "prompt", "width", "height"])
        writer.writeheader()
        writer.writerows(rows)
    return path
