"""The world's codec: a small Wan2.2-architecture VAE trained on world clips (stub; body follows)."""

from __future__ import annotations

from pathlib import Path

from .catalog import FRAMES, SIZE


def train_codec(out: str | Path, *, steps: int = 1500, quick: bool = False, size: int = SIZE, frames: int = FRAMES,
                seed: int = 0) -> dict:
    """Train the codec on train-split clips, save it with ``save_vae`` to ``out``; returns a report dict."""
    raise NotImplementedError


def load_codec(path: str | Path, device: str = "cpu"):
    """The saved codec as a :class:`chameleon_core.vae.WanVAE`."""
    raise NotImplementedError


def codec_psnr(vae, videos) -> float:
    """Mean reconstruction PSNR (dB, pixels in 0..1) of whole-video encode + decode."""
    raise NotImplementedError
