"""FashionChameleon core: a pure-PyTorch library (no ComfyUI imports).

Model, KV cache, VAE, samplers, garment-switch rescheduling, checkpoint loading and benchmarks. The ComfyUI nodes
in ``nodes/`` are a thin layer over this package.
"""

from .config import PRESETS, StreamSettings, WanConfig, preset
from .latents import WAN21, WAN22, LatentFamily, latent_family, to_model_space, to_raw

__all__ = [
    "PRESETS",
    "StreamSettings",
    "WanConfig",
    "preset",
    "WAN21",
    "WAN22",
    "LatentFamily",
    "latent_family",
    "to_model_space",
    "to_raw",
]
