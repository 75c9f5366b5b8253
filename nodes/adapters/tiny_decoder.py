"""ComfyUI's ``vae_approx`` folder -> the core's tiny TAEHV decoder: the loader's combo and load, the check that a
decoder fits the latents, and per-chunk frame previews (:class:`TinyPreview`)."""

from __future__ import annotations

import logging

import torch

from ...chameleon_core.decoding import StreamingDecoder
from ...chameleon_core.latents import LatentFamily
from ...chameleon_core.taehv import TAEHV_PRESETS, TinyVideoDecoder, infer_taehv_config, load_taehv
from ..errors import node_error
from ..types import ChameleonPreviewDecoder

logger = logging.getLogger(__name__)


TINY_DECODER_DTYPES = ["default", "fp32", "bf16", "fp16"]


def is_tiny_decoder_file(path: str) -> bool:
    """A TAEHV Wan decoder: named ``taew2_1*`` / ``taew2_2*`` (the releases), or a ``.safetensors`` whose header
    shapes the core reads as one (checked without loading tensors). ``vae_approx`` also holds the image TAESD files,
    which are not video decoders."""
    import os

    name = os.path.basename(path)
    if name.startswith(tuple(TAEHV_PRESETS)):
        return True
    if not name.endswith(".safetensors"):
        return False
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            names = [k for k in f.keys() if k.startswith("decoder.")]  # noqa: SIM118 (safe_open is no dict)
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in names}
        infer_taehv_config(shapes)
    except Exception:  # noqa: BLE001 (safetensors' own error type too): unreadable or another model, not offered
        return False
    return True


def tiny_decoder_names() -> list[str]:
    """The TAEHV video decoders in ComfyUI's ``vae_approx`` folders (the tiny decoder loader's combo)."""
    import folder_paths

    names = []
    for name in folder_paths.get_filename_list("vae_approx"):
        path = folder_paths.get_full_path("vae_approx", name)
        if path is not None and is_tiny_decoder_file(path):
            names.append(name)
    return names


def _tiny_dtype(choice: str, device: torch.device) -> torch.dtype:
    import comfy.model_management as mm

    if choice != "default":
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]
    if device.type == "cpu":
        return torch.float32
    if mm.should_use_fp16(device):
        return torch.float16
    return torch.bfloat16 if mm.should_use_bf16(device) else torch.float32


def load_tiny_decoder(node: str, decoder_name: str, weight_dtype: str) -> ChameleonPreviewDecoder:
    """Load ``decoder_name`` from ``vae_approx`` as the core's tiny streaming decoder (exact key checks), on the
    device ComfyUI runs VAEs on, or explain why not. It is a few tens of MB, so it stays there."""
    import comfy.model_management as mm
    import folder_paths

    path = folder_paths.get_full_path("vae_approx", decoder_name)
    if path is None:
        folders = folder_paths.get_folder_paths("vae_approx")
        raise node_error(node, "decoder_name", decoder_name, f"no such file in the vae_approx folders {folders}",
                         "put taew2_2.safetensors (Wan2.2) or taew2_1.safetensors (Wan2.1) from madebyollin/taehv "
                         "into ComfyUI/models/vae_approx and queue the workflow again")
    if weight_dtype not in TINY_DECODER_DTYPES:
        raise node_error(node, "weight_dtype", weight_dtype, "unknown weight dtype",
                         f"choose one of {TINY_DECODER_DTYPES}")
    device = mm.vae_device()
    dtype = _tiny_dtype(weight_dtype, device)
    try:  # the core names the missing / unexpected key or the wrong shape
        decoder = load_taehv(path, device=device, dtype=dtype)
    except Exception as e:  # noqa: BLE001 (ValueError from the checks; the readers' own errors on a damaged file)
        raise node_error(node, "decoder_name", decoder_name, str(e) or type(e).__name__,
                         "use taew2_2.safetensors / taew2_1.safetensors from madebyollin/taehv, re-downloaded if "
                         "this one is damaged") from None
    logger.info("%s: %s loaded (%s latents, %s on %s)", node, decoder_name, decoder.family.name, dtype, device)
    return ChameleonPreviewDecoder(decoder=decoder, name=decoder_name)


def check_decoder(node: str, decoder: ChameleonPreviewDecoder, want: LatentFamily) -> None:
    """``decoder`` (a CHAMELEON_PREVIEW_DECODER) is a tiny decoder for the latent family ``want``."""
    if not isinstance(getattr(decoder, "decoder", None), TinyVideoDecoder):
        raise node_error(node, "decoder", decoder, "not a tiny decoder", "connect ChameleonTinyDecoderLoader")
    if decoder.family.name != want.name:
        fix = "taew2_2" if want.name == "wan2.2" else "taew2_1"
        raise node_error(node, "decoder", decoder.name,
                         f"this tiny decoder decodes {decoder.family.name} latents but these are {want.name}",
                         f"load {fix}.safetensors with ChameleonTinyDecoderLoader")


class TinyPreview:
    """Per-chunk preview frames from the tiny decoder: one carried :class:`StreamingDecoder` per node call, so each
    chunk costs one tiny decode and the preview shows what the live path would show (the segment's first chunk
    starts the decoder's carried state afresh)."""

    def __init__(self, decoder: ChameleonPreviewDecoder, family: LatentFamily) -> None:
        self.stream = StreamingDecoder(decoder.decoder, family)

    def __call__(self, model_space: torch.Tensor) -> torch.Tensor:
        """A chunk's model-space latents ``[B, C, n, h, w]`` -> its last frame ``[H, W, 3]`` in 0..1 (CPU, float)."""
        self.stream.decode(model_space.detach())
        frame = self.stream.last_frame[0].permute(1, 2, 0).float().cpu()
        return ((frame + 1.0) / 2.0).clamp(0.0, 1.0)
