"""ChameleonConditions: reference and garment images -> model-space one-frame latents via ComfyUI's VAE (fitted
and encoded as the core's ``encode_condition`` does for every job)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from . import adapters
from .types import ChameleonConditions, ConditionsSocket, with_aliases


class ChameleonConditionsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            node_id="ChameleonConditions",
            display_name="FashionChameleon Conditions",
            category="FashionChameleon",
            description="Encodes the person (reference) and garment images as in-context condition latents. The "
                        "reference is scaled to cover and centre-cropped; the garment is scaled to fit and padded "
                        "with white, as in the training data. Alpha is composited on white, grey is expanded.",
            inputs=[
                io.Vae.Input("vae", tooltip="The Wan VAE matching the model (Wan2.2 VAE for the 5B student/teacher)."),
                io.Image.Input("reference", tooltip="The person. Any size, RGB/RGBA/grey; a batch uses its first image (logged)."),
                io.Image.Input("garment", tooltip="The garment. Any size, RGB/RGBA/grey; a batch uses its first image (logged)."),
                io.Int.Input("width", default=704, min=32, max=4096, step=32,
                             tooltip="Video width in pixels; a multiple of 32 for Wan2.2 (16 for Wan2.1)."),
                io.Int.Input("height", default=1280, min=32, max=4096, step=32,
                             tooltip="Video height in pixels; a multiple of 32 for Wan2.2 (16 for Wan2.1)."),
            ],
            outputs=[ConditionsSocket.Output(display_name="conditions")],
        ))

    @classmethod
    def execute(cls, vae, reference: torch.Tensor, garment: torch.Tensor, width: int, height: int) -> io.NodeOutput:
        node = "ChameleonConditions"
        family = adapters.vae_family(node, vae)
        adapters.check_resolution(node, family, width, height)
        codec, size = adapters.codec(vae), (width, height)
        reference, garment = adapters.first_image(node, "reference", reference), adapters.first_image(node, "garment",
                                                                                                       garment)
        return io.NodeOutput(ChameleonConditions(
            reference=adapters.encode_condition(codec, family, reference, garment=False, size=size),
            garment=adapters.encode_condition(codec, family, garment, garment=True, size=size),
            width=width, height=height, family=family.name,
        ))
