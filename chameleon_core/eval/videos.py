"""Reading videos and images for scoring: an mp4/webm/... file (PyAV) or a folder of frame images -> uint8 frames.

Frames are numpy ``[F, H, W, 3]`` uint8 RGB, the layout OpenCV and PIL use. Every failure raises
:class:`VideoFileError` naming the file, what is wrong and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..images import ImageFileError, load_image, to_rgb

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class VideoFileError(ValueError):
    """A video (or image) to score cannot be read; the message names the file and the fix."""


def read_video(path: str | os.PathLike[str], *, max_frames: int | None = None) -> np.ndarray:
    """All frames (at most ``max_frames``) of a video file or a folder of frame images -> ``[F, H, W, 3]`` uint8.

    A folder's frames are its image files in name order (``frame_00000.png`` ... as the pack's command line writes
    them). At least two frames are needed to measure motion; fewer raise :class:`VideoFileError`.
    """
    return np.stack(list(iter_video(path, max_frames=max_frames)))


def iter_video(path: str | os.PathLike[str], *, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """The frames of :func:`read_video` one at a time (``[H, W, 3]`` uint8), so a long video is never held whole.
    Raises :class:`VideoFileError` (a missing or damaged file, frames of different sizes, fewer than 2 frames)."""
    p = Path(path).expanduser()
    if p.is_dir():
        frames = _iter_frame_folder(p, max_frames)
    elif p.is_file():
        frames = _iter_video_file(p, max_frames)
    else:
        raise VideoFileError(f"video not found: {p} (absolute: {p.resolve()}); check the path")
    count, shape = 0, None
    for frame in frames:
        if shape is not None and frame.shape != shape:
            raise VideoFileError(f"the frames of {p} differ in size (frame {count} is {frame.shape}, the first "
                                 f"{shape}); re-export the video at one size")
        shape = frame.shape
        count += 1
        yield frame
    if count < 2:
        raise VideoFileError(f"video {p} has {count} frame(s); scoring motion needs at least 2")


def _iter_frame_folder(folder: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in FRAME_SUFFIXES and f.is_file())
    if not files:
        raise VideoFileError(f"folder {folder} holds no frame images ({', '.join(FRAME_SUFFIXES)}); pass a video file "
                             "or a folder of frames")
    for f in files[:max_frames]:
        yield read_rgb(f)


def _iter_video_file(p: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    try:
        import av
    except ImportError:
        raise VideoFileError(f"reading {p} needs PyAV, which is not installed: pip install av (or pass a folder of "
                             "frame images)") from None
    count = 0
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise VideoFileError(f"{p} has no video stream; pass a video file")
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
                count += 1
                if max_frames is not None and count >= max_frames:
                    break
    except VideoFileError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoFileError(f"cannot read the video {p} ({type(e).__name__}: {e}); the file is damaged or not a "
                             "video: re-export it as mp4 (H.264)") from None


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file -> ``[H, W, 3]`` uint8 RGB (alpha over white, as the pack's image loading does)."""
    try:
        image = to_rgb(load_image(path))[0]
    except ImageFileError as e:
        raise VideoFileError(str(e)) from None
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def resize_longest(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """A frame ``[H, W, 3]`` shrunk (area filter) so the longer side is at most ``max_side``; never enlarged."""
    import cv2

    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
