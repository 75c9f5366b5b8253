"""A ComfyUI VAE -> the core: its latent family, ComfyUI's single-image encode, and the codec
(:class:`ComfyCodec`): ComfyUI's own encode for single images, as the conditions are encoded, and the core streaming
decoder over ComfyUI's VAE weights for decode (carried causal state: one continuous video)."""

from __future__ import annotations

import torch

from ...chameleon_core.latents import LatentFamily, latent_family
from ...chameleon_core.vae import WanVAE
from ..errors import node_error
from .model_files import load_for_decode, managed_view


def vae_family(node: str, vae) -> LatentFamily:
    """The latent family of a ComfyUI VAE, or an error naming the node when it is not a Wan VAE."""
    channels = getattr(vae, "latent_channels", None)
    try:
        return latent_family(int(channels))
    except (TypeError, ValueError):
        raise node_error(node, "vae", f"{channels} latent channels", "not a Wan VAE",
                         "load wan2.2_vae.safetensors (Wan2.2 models) or wan_2.1_vae.safetensors (Wan2.1) with "
                         "the core VAELoader") from None


def encode_image(vae, image: torch.Tensor) -> torch.Tensor:
    """IMAGE ``[B, H, W, 3]`` -> raw one-frame latents ``[B, C, 1, h, w]`` with ComfyUI's VAE (one call per image:
    ComfyUI's video VAE reads a batch as the frames of one video)."""
    raws = []
    for one in image[:, :, :, :3].split(1):
        raw = vae.encode(one)
        raws.append(raw if raw.ndim == 5 else raw.unsqueeze(2))
    return torch.cat(raws)


class ComfyCodec:
    """A ComfyUI VAE as the core's ``FrameCodec``: ComfyUI's encode for single images (conditions, the new garment,
    the disentangled reference), the core streaming decoder for decode.

    The decoder is a view (:func:`model_files.managed_view`): core modules holding the very parameter objects of
    ComfyUI's VAE, loaded on its device by ComfyUI's model management before each decode, so no second copy of the
    weights exists and ComfyUI accounts for them. Built on first use: conditions and refresh-only switches never
    decode.
    """

    def __init__(self, vae) -> None:
        self.vae = vae
        self._view: WanVAE | None = None

    @property
    def device(self) -> torch.device:
        """Where ComfyUI runs this VAE (its ``vae_device``)."""
        return torch.device(getattr(self.vae, "device", "cpu"))

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self.vae, "vae_dtype", torch.float32)

    def decoder_for(self, latent_shape: tuple[int, ...]) -> WanVAE:
        """The core streaming VAE over ComfyUI's weights, loaded by model management with room for
        ``latent_shape``."""
        load_for_decode(self.vae, latent_shape)
        self._view = managed_view(self.vae, self._view)
        return self._view

    @property
    def decoder(self) -> WanVAE:
        """The streaming VAE for one chunk of latents (see :meth:`decoder_for`)."""
        return self.decoder_for((1, self.vae.latent_channels, 3, 64, 64))

    def decode_chunk(self, latents: torch.Tensor, state=None, *, clamp: bool = True, consume: bool = False):
        """Raw latents ``[B, C, n, h, w]`` + carried state -> pixels ``[B, 3, F, H, W]`` in [-1, 1], new state."""
        decoder = self.decoder_for(tuple(latents.shape))
        return decoder.decode_chunk(latents.to(self.device, self.dtype), state, clamp=clamp, consume=consume)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> raw one-frame latents ``[B, C, 1, h, w]`` (ComfyUI's encode)."""
        return encode_image(self.vae, ((image.float() + 1.0) / 2.0).permute(0, 2, 3, 1))


CODEC_ATTRIBUTE = "_fashionchameleon_codec"
"""Where a ComfyUI VAE object keeps its codec (an attribute, not a table: a table entry would keep every VAE ever
loaded alive, since the codec refers to its VAE; the attribute makes a cycle the garbage collector frees)."""


def vae_codec(vae) -> ComfyCodec:
    """The codec of a ComfyUI VAE object, built once per object (it goes when the VAE goes, and with it what was
    decoded with it: ``chameleon_core.decoding.VideoSegment`` keeps decodes per codec)."""
    codec = getattr(vae, CODEC_ATTRIBUTE, None)
    if codec is None:
        codec = ComfyCodec(vae)
        setattr(vae, CODEC_ATTRIBUTE, codec)
    return codec


def streaming_vae(vae, latent_shape: tuple[int, ...] | None = None) -> WanVAE:
    """The core streaming VAE over a ComfyUI VAE's own weights, loaded by ComfyUI's model management (with room
    for decoding chunks of ``latent_shape``)."""
    c = vae_codec(vae)
    return c.decoder if latent_shape is None else c.decoder_for(latent_shape)
