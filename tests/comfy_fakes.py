"""Stand-ins for the ComfyUI objects the adapters take, for tests without ComfyUI."""

from __future__ import annotations

import torch


class ComfyLikeVAE:
    """The part of ComfyUI's ``comfy.sd.VAE`` the adapters use; like ComfyUI's video VAEs, ``encode`` reads an
    IMAGE batch ``[T, H, W, 3]`` in 0..1 as the frames of one video."""

    def __init__(self, core) -> None:
        self.core, self.latent_channels = core, core.latent_channels
        self.device, self.vae_dtype = torch.device("cpu"), torch.float32
        self.first_stage_model, self.patcher = core.model, None  # ComfyUI's module; no model management here

    def get_sd(self) -> dict[str, torch.Tensor]:
        return self.core.model.state_dict()

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return self.core.encode(image.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1)
