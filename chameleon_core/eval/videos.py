"""Reading videos and images for scoring: an mp4/webm/... file (PyAV) or a folder of frame images -> uint8 frames.

Frames are numpy ``[F, H, W, 3]`` uint8 RGB, the layout OpenCV and PIL use. Every failure raises
:class:`VideoFileError` naming the file, what is wrong and the fix.
"""

from __future__ import annotations

import os
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
    p = Path(path).expanduser()
    if p.is_dir():
        frames = _read_frame_folder(p, max_frames)
    elif p.is_file():
        frames = _read_video_file(p, max_frames)
    else:
        raise VideoFileError(f"video not found: {p} (absolute: {p.resolve()}); check the path")
    if len(frames) < 2:
        raise VideoFileError(f"video {p} has {len(frames)} frame(s); scoring motion needs at least 2")
    if len({f.shape for f in frames}) != 1:
        raise VideoFileError(f"the frames of {p} differ in size ({sorted({f.shape for f in frames})}); "
                             "re-export the video at one size")
    return np.stack(frames)


def _read_frame_folder(folder: Path, max_frames: int | None) -> list[np.ndarray]:
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in FRAME_SUFFIXES and f.is_file())
    if not files:
        raise VideoFileError(f"folder {folder} holds no frame images ({', '.join(FRAME_SUFFIXES)}); pass a video file "
                             "or a folder of frames")
    return [read_rgb(f) for f in files[:max_frames]]


def _read_video_file(p: Path, max_frames: int | None) -> list[np.ndarray]:
    try:
        import av
    except ImportError:
        raise VideoFileError(f"reading {p} needs PyAV, which is not installed: pip install av (or pass a folder of "
                             "frame images)") from None
    frames: list[np.ndarray] = []
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise VideoFileError(f"{p} has no video stream; pass a video file")
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except VideoFileError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoFileError(f"cannot read the video {p} ({type(e).__name__}: {e}); the file is damaged or not a "
                             "video: re-export it as mp4 (H.264)") from None
    return frames


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file -> ``[H, W, 3]`` uint8 RGB (alpha over white, as the pack's image loading does)."""
    try:
        image = to_rgb(load_image(path))[0]
    except ImageFileError as e:
        raise VideoFileError(str(e)) from None
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def resize_longest(frames: np.ndarray, max_side: int | None) -> np.ndarray:
    """Frames ``[F, H, W, 3]`` shrunk (area filter) so the longer side is at most ``max_side``; never enlarged."""
    import cv2

    h, w = frames.shape[1:3]
    if not max_side or max(h, w) <= max_side:
        return frames
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
