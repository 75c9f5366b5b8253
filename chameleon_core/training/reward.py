"""Frame rewards for GR-DMD: the LAION aesthetic predictor on CLIP ViT-L/14 image features, or any callable.

A reward is ``reward(frames [N, 3, H, W] in [-1, 1]) -> [N]`` (higher is better); the stage turns rewards into
per-frame gradient weights (:func:`chameleon_core.training.dmd.reward_weights`). FashionChameleon scores frames with
the LAION "improved aesthetic predictor": CLIP ViT-L/14 image embeddings (the 768-wide projection), L2-normalised,
into an MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1 with no activations. Its released weights
(``sac+logos+ava1-l14-linearMSE.pth``) are a plain state dict of an ``nn.Sequential`` named ``layers``:
``layers.{0,2,4,6,7}.{weight,bias}`` (the odd indices up to 5 are dropouts). The user gives both files:

- the MLP as ``.safetensors`` or ``.pth`` (read with ``weights_only=True``: never unpickles code);
- CLIP as a local HuggingFace folder (``openai/clip-vit-large-patch14``), loaded with transformers'
  ``CLIPVisionModelWithProjection`` (transformers is optional: only this reward needs it).

Tests plug in a tiny stand-in such as :func:`brightness_reward`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from chameleon_core.checkpoints.errors import CheckpointError
from chameleon_core.checkpoints.weight_files import read_weight_file

logger = logging.getLogger(__name__)

RewardFn = Callable[[torch.Tensor], torch.Tensor]
"""``reward(frames [N, 3, H, W] in [-1, 1]) -> [N]``."""

CLIP_SIZE = 224
"""CLIP ViT-L/14's input side."""
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's per-channel normalisation of [0, 1] RGB."""
MLP_WIDTHS = (768, 1024, 128, 64, 16, 1)
"""The aesthetic MLP's layer widths."""
_LINEAR_INDICES = (0, 2, 4, 6, 7)
"""Positions of the Linear layers in the predictor's ``nn.Sequential`` (dropouts sit at 1, 3, 5)."""


class AestheticMLP(nn.Module):
    """The LAION aesthetic head: Linear/Dropout stack with no activations; ``state_dict`` keys ``layers.N.*``."""

    def __init__(self, widths: tuple[int, ...] = MLP_WIDTHS) -> None:
        super().__init__()
        if len(widths) != len(_LINEAR_INDICES) + 1:
            raise ValueError(f"the aesthetic MLP has {len(_LINEAR_INDICES)} linear layers, got widths {widths}")
        dropouts = (0.2, 0.2, 0.1)
        modules: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            modules.append(nn.Linear(a, b))
            if i < len(dropouts):
                modules.append(nn.Dropout(dropouts[i]))
        self.layers = nn.Sequential(*modules)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """L2-normalised image features ``[N, 768]`` -> scores ``[N]``."""
        return self.layers(features).squeeze(-1)


_MLP_GET = ("pass the LAION improved aesthetic predictor's sac+logos+ava1-l14-linearMSE.pth (or a .safetensors copy) "
            "as a plain state dict")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Through the checkpoint package's reader: regular files only, ``.pth`` weights-only (a pickle holding code is
    refused, no message suggests ``weights_only=False``), NaN/inf weights refused; :class:`CheckpointError`."""
    return read_weight_file(path, what="aesthetic MLP file", get=_MLP_GET)


def load_aesthetic_mlp(path: str | Path) -> AestheticMLP:
    """The aesthetic MLP from ``path`` (.safetensors or .pth), checked key by key; eval mode, fp32, CPU."""
    path = Path(path)
    state = _read_state_dict(path)
    state = {k.removeprefix("module.").removeprefix("model."): v for k, v in state.items()}
    mlp = AestheticMLP()
    expected = mlp.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} is not a LAION aesthetic MLP: missing {missing}; found keys {sorted(state)[:8]}. Expected "
            f"{sorted(expected)}; {_MLP_GET}"
        )
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: {name} has shape {tuple(state[name].shape)}, expected {tuple(tensor.shape)} (the ViT-L/14 "
                "predictor takes 768-wide features; other CLIP sizes are not supported)"
            )
    mlp.load_state_dict({k: state[k].float() for k in expected})
    return mlp.eval().requires_grad_(False)


def clip_preprocess(frames: torch.Tensor, size: int = CLIP_SIZE) -> torch.Tensor:
    """Frames ``[N, 3, H, W]`` in [-1, 1] -> CLIP input ``[N, 3, size, size]``: short side to ``size`` (bicubic,
    antialiased), centre crop, OpenAI mean/std normalisation, as CLIP's own image processor does."""
    x = ((frames.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class AestheticReward:
    """``reward(frames) -> [N]``: CLIP image embeddings, L2-normalised, into the aesthetic MLP (no gradient).

    ``clip`` is any module returning an object with ``image_embeds`` (transformers'
    ``CLIPVisionModelWithProjection``) or a tensor ``[N, 768]``; ``batch`` frames are scored at a time.
    """

    def __init__(self, clip: nn.Module, mlp: AestheticMLP, *, batch: int = 16) -> None:
        self.clip = clip.eval().requires_grad_(False)
        self.mlp = mlp.eval().requires_grad_(False)
        self.batch = batch

    @property
    def device(self) -> torch.device:
        return next(self.mlp.parameters()).device

    def to(self, device: torch.device | str) -> AestheticReward:
        self.clip.to(device)
        self.mlp.to(device)
        return self

    @torch.no_grad()
    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[N, 3, H, W]`` in [-1, 1] -> L2-normalised image embeddings ``[N, 768]`` fp32."""
        clip_dtype = next(self.clip.parameters()).dtype
        out = []
        for start in range(0, frames.shape[0], self.batch):
            pixels = clip_preprocess(frames[start : start + self.batch].to(self.device))
            emb = self.clip(pixel_values=pixels.to(clip_dtype))
            emb = emb if isinstance(emb, torch.Tensor) else emb.image_embeds
            out.append(F.normalize(emb.float(), dim=-1))
        return torch.cat(out)

    @torch.no_grad()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(frames)).float()


def load_aesthetic_reward(
    mlp_path: str | Path,
    clip_dir: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AestheticReward:
    """The aesthetic reward from the MLP file and a local CLIP ViT-L/14 folder (HuggingFace layout)."""
    clip_dir = Path(clip_dir)
    mlp = load_aesthetic_mlp(mlp_path)
    if not (clip_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"CLIP folder {clip_dir} has no config.json; pass a local copy of openai/clip-vit-large-patch14 "
            "(e.g. `huggingface-cli download openai/clip-vit-large-patch14 --local-dir <folder>`)"
        )
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(
            f"the aesthetic reward needs transformers to load CLIP ViT-L/14 from {clip_dir}, and it cannot be "
            f"imported ({exc}): `pip install transformers`"
        ) from exc
    from ..text import (
        _from_pretrained_kwargs,  # the dtype keyword differs across transformers versions
    )

    clip = transformers.CLIPVisionModelWithProjection.from_pretrained(
        str(clip_dir), **_from_pretrained_kwargs(transformers, dtype)
    )
    width = clip.config.projection_dim
    if width != MLP_WIDTHS[0]:
        raise ValueError(
            f"CLIP in {clip_dir} projects to {width} features but the aesthetic MLP takes {MLP_WIDTHS[0]}; use "
            "CLIP ViT-L/14 (openai/clip-vit-large-patch14)"
        )
    logger.info("aesthetic reward: CLIP from %s, MLP from %s", clip_dir, mlp_path)
    return AestheticReward(clip, mlp).to(device)


def brightness_reward(frames: torch.Tensor) -> torch.Tensor:
    """A stand-in reward for tests: each frame's mean brightness ``[N]``."""
    return frames.float().mean(dim=(1, 2, 3))


STAND_IN_NAMES = ("brightness", "random")
"""Reward specs that select the :func:`brightness_reward` stand-in (tests and tiny runs; ``random`` is the tiny
preset's historical name for it)."""
_MLP_SUFFIXES = (".safetensors", ".sft", ".pth", ".pt", ".bin")


def reward_files(spec: str) -> tuple[Path, Path]:
    """The aesthetic MLP file and the CLIP folder of a reward folder (the folder itself or a subfolder with
    ``config.json``); FileNotFoundError for a missing folder, ValueError when it does not hold exactly one MLP file
    and a CLIP folder. Non-regular entries count, so that a FIFO named ``.pth`` is refused by name when read."""
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"reward folder not found: {folder}{' is a file, not a folder' if folder.exists() else ''}; set dmd.reward "
            "to a folder holding CLIP ViT-L/14 (HuggingFace layout) and the LAION aesthetic MLP file, or to 'none' for "
            "unweighted DMD"
        )
    clip_dirs = [d for d in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())] if (d / "config.json").exists()]
    mlps = sorted(p for p in folder.iterdir() if not p.is_dir() and p.suffix in _MLP_SUFFIXES)
    if not clip_dirs or len(mlps) != 1:
        listing = sorted(p.name for p in folder.iterdir())[:20]
        raise ValueError(
            f"reward folder {folder} must hold one aesthetic MLP file ({', '.join(_MLP_SUFFIXES)}) and a CLIP "
            f"ViT-L/14 folder with config.json; found {len(mlps)} MLP file(s) and {len(clip_dirs)} CLIP folder(s) "
            f"among {listing}"
        )
    return mlps[0], clip_dirs[0]


def reward_from_spec(spec: str, *, device: torch.device | str = "cpu") -> RewardFn | None:
    """The reward a stage config names: ``none`` (uniform frame weights: plain DMD), ``brightness`` / ``random``
    (the test stand-in), or a folder holding the aesthetic predictor: one MLP file (``.pth`` / ``.safetensors``)
    and a CLIP ViT-L/14 HuggingFace folder (the folder itself or a subfolder with ``config.json``)."""
    if spec == "none":
        return None
    if spec in STAND_IN_NAMES:
        logger.info("reward: the brightness stand-in (%r); use a folder with CLIP ViT-L/14 and the LAION MLP for "
                    "real training", spec)
        return brightness_reward
    mlp, clip_dir = reward_files(spec)
    return load_aesthetic_reward(mlp, clip_dir, device=device)
