"""Where the command line's frames go: an H.264 mp4 (PyAV) or a folder of PNGs, written as chunks arrive."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

logger = logging.getLogger(__name__)

FRAME_PATTERN = "frame_{:05d}.png"




class FrameWriter(Protocol):
    count: int
    """Frames written so far."""

    def write(self, frames: np.ndarray) -> None:
        """frames: ``[F, H, W, 3]`` uint8."""
        ...

    def close(self) -> None: ...


class FrameFolder:
    """Writes ``frame_00000.png`` ... as frames arrive."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.count = 0

    def write(self, frames: np.ndarray) -> None:
        from PIL import Image

        for frame in frames:
            Image.fromarray(frame).save(self.folder / FRAME_PATTERN.format(self.count))
            self.count += 1

    def close(self) -> None:
        pass


class Mp4File:
    """Encodes frames into an H.264 mp4 (PyAV) as they arrive, so no video is held in memory."""

    def __init__(self, path: Path, fps: float, width: int, height: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "18"}
        self.count = 0

    def write(self, frames: np.ndarray) -> None:
        import av

        for frame in frames:
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self.container.mux(packet)
            self.count += 1

    def close(self) -> None:
        for packet in self.stream.encode():  # flush the encoder
            self.container.mux(packet)
        self.container.close()


@contextlib.contextmanager
def open_output(out: Path, fps: float, width: int, height: int) -> Iterator[FrameWriter]:
    """The writer for ``out`` (an mp4 file, else a PNG folder); closed (the mp4 finalised) even when the run stops
    early."""
    writer = Mp4File(out, fps, width, height) if out.suffix.lower() == ".mp4" else FrameFolder(out)
    try:
        yield writer
    finally:
        writer.close()


def to_uint8_frames(pixels: torch.Tensor) -> np.ndarray:
    """Decoded pixels ``[1, 3, F, H, W]`` in [-1, 1] -> ``[F, H, W, 3]`` uint8."""
    frames = ((pixels[0].float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)  # [3, F, H, W]
    return frames.permute(1, 2, 3, 0).cpu().numpy()


