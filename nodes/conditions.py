"""ChameleonConditions: reference and garment images -> model-space one-frame latents via ComfyUI's VAE (fitted
and encoded as the core's ``encode_condition`` does for every job). ChameleonVideoSize: what a public student's
stream starts from instead (its size, and a first frame for image-to-video)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..chameleon_core.session import encode_condition
from .adapters.checks import check_resolution
from .adapters.vae import vae_codec, vae_family
from .adapters.values import first_image
from .errors import node_error
from .sockets import ConditionsSocket, with_aliases
from .types import ChameleonConditions


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
        family = vae_family(node, vae)
        check_resolution(node, family, width, height)
        codec, size = vae_codec(vae), (width, height)
        reference, garment = first_image(node, "reference", reference), first_image(node, "garment",
                                                                                                       garment)
        return io.NodeOutput(ChameleonConditions(
            reference=encode_condition(codec, family, reference, garment=False, size=size),
            garment=encode_condition(codec, family, garment, garment=True, size=size),
            width=width, height=height, family=family.name,
        ))


class ChameleonVideoSizeNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            aliases=("text to video", "image to video", "first frame", "longlive", "self-forcing", "causvid"),
            node_id="ChameleonVideoSize",
            display_name="FashionChameleon Video Size (text/image-to-video)",
            category="FashionChameleon",
            description="What a public student's stream (LongLive, Self-Forcing, CausVid) starts from: the video "
                        "size, and for image-to-video (LongLive 2.0) a first frame, cover-cropped to the size and "
                        "encoded with the VAE. No person or garment: those streams are text-to-video.",
            inputs=[
                io.Int.Input("width", default=832, min=16, max=4096, step=16,
                             tooltip="Video width in pixels; a multiple of 32 for Wan2.2 (LongLive 2.0: 1280), 16 "
                                     "for Wan2.1 (832)."),
                io.Int.Input("height", default=480, min=16, max=4096, step=16,
                             tooltip="Video height in pixels (LongLive 2.0: 704; Wan2.1 students: 480)."),
                io.Vae.Input("vae", optional=True, tooltip="The model's Wan VAE: encodes the first frame."),
                io.Image.Input("image", optional=True,
                               tooltip="Image-to-video: the first frame (needs the vae). Leave it out for "
                                       "text-to-video."),
            ],
            outputs=[ConditionsSocket.Output(display_name="conditions")],
        ))

    @classmethod
    def execute(cls, width: int, height: int, vae=None, image: torch.Tensor | None = None) -> io.NodeOutput:
        node = "ChameleonVideoSize"
        family, first = None, None
        if image is not None:
            if vae is None:
                raise node_error(node, "vae", "not connected", "the first frame is encoded with the VAE",
                                          "connect the model's VAE, or remove the image for text-to-video")
            fam = vae_family(node, vae)
            check_resolution(node, fam, width, height)
            first = encode_condition(vae_codec(vae), fam, first_image(node, "image", image),
                                              garment=False, size=(width, height))
            family = fam.name
        elif vae is not None:
            family = vae_family(node, vae).name
        return io.NodeOutput(ChameleonConditions(reference=None, garment=None, width=width, height=height,
                                                 family=family, first_frame=first))
