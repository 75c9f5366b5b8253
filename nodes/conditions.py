"""ChameleonConditions: reference and garment images -> model-space one-frame latents via ComfyUI's VAE."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ._core import latents as core_latents
from .errors import node_error
from .images import fit_garment, fit_reference
from .types import ChameleonConditions, ConditionsSocket


def vae_family(node: str, vae) -> core_latents.LatentFamily:
    """The latent family of a ComfyUI VAE, or an error naming the node when it is not a Wan VAE."""
    channels = getattr(vae, "latent_channels", None)
    try:
        return core_latents.latent_family(int(channels))
    except (TypeError, ValueError):
        raise node_error(node, "vae", f"{channels} latent channels", "not a Wan VAE",
                         "load wan2.2_vae.safetensors (Wan2.2 models) or wan_2.1_vae.safetensors (Wan2.1) with "
                         "the core VAELoader") from None


def encode_image(vae, image: torch.Tensor) -> torch.Tensor:
    """One IMAGE ``[1, H, W, 3]`` -> raw one-frame latent ``[1, C, 1, h, w]`` with ComfyUI's VAE."""
    raw = vae.encode(image[:1, :, :, :3])
    return raw if raw.ndim == 5 else raw.unsqueeze(2)


class ChameleonConditionsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ChameleonConditions",
            display_name="FashionChameleon Conditions",
            category="FashionChameleon",
            description="Encodes the person (reference) and garment images as in-context condition latents. The "
                        "reference is scaled to cover and centre-cropped; the garment is scaled to fit and padded "
                        "with white, as in the training data. Alpha is composited on white, grey is expanded.",
            inputs=[
                io.Vae.Input("vae", tooltip="The Wan VAE matching the model (Wan2.2 VAE for the 5B student/teacher)."),
                io.Image.Input("reference", tooltip="The person. Any size, RGB/RGBA/grey; only the first image is used."),
                io.Image.Input("garment", tooltip="The garment. Any size, RGB/RGBA/grey; only the first image is used."),
                io.Int.Input("width", default=704, min=32, max=4096, step=32,
                             tooltip="Video width in pixels; a multiple of 32 for Wan2.2 (16 for Wan2.1)."),
                io.Int.Input("height", default=1280, min=32, max=4096, step=32,
                             tooltip="Video height in pixels; a multiple of 32 for Wan2.2 (16 for Wan2.1)."),
            ],
            outputs=[ConditionsSocket.Output(display_name="conditions")],
        )

    @classmethod
    def execute(cls, vae, reference: torch.Tensor, garment: torch.Tensor, width: int, height: int) -> io.NodeOutput:
        node = "ChameleonConditions"
        family = vae_family(node, vae)
        step = family.spatial_stride * 2  # the DiT's 2x2 patches on top of the VAE's stride
        for name, value in (("width", width), ("height", height)):
            if value % step:
                raise node_error(node, name, value, f"not a multiple of {step} ({family.name} VAE + 2x2 patches)",
                                 f"use {round(value / step) * step or step}")
        ref = encode_image(vae, fit_reference(reference, width, height))
        gar = encode_image(vae, fit_garment(garment, width, height))
        return io.NodeOutput(ChameleonConditions(
            reference=family.to_model_space(ref.float()), garment=family.to_model_space(gar.float()),
            width=width, height=height, family=family.name,
        ))
