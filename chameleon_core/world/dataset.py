"""Writing and reading world datasets in the authors' layout (stub; body follows)."""

from __future__ import annotations

from pathlib import Path

from .catalog import FRAMES, SIZE


def write_dataset(root: str | Path, split: str = "train", count: int = 16, size: int = SIZE, frames: int = FRAMES,
                  seed: int = 0) -> Path:
    """Write ``count`` samples of ``split`` under ``root/split/`` and the training CSV ``root/<split>.csv``."""
    raise NotImplementedError


def read_metadata(video_path: str | Path) -> dict:
    """The metadata JSON written beside a dataset video (``<stem>.json``)."""
    raise NotImplementedError
