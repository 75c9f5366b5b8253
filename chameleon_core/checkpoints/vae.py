"""Load a Wan2.1 / Wan2.2 VAE into :class:`~chameleon_core.vae.WanVAE`, from a file or an in-memory state dict.

Accepts the official ``Wan2.x_VAE.pth`` and ComfyUI's repackaged ``wan_2.1_vae`` / ``wan2.2_vae.safetensors``, with
the prefixes of :data:`~.layouts.VAE_PREFIXES`. The family and config (widths, z_dim, stages) come from the tensor
shapes (:func:`infer_vae_config`), so tiny test checkpoints load too. Files are read through the same tensor
sources as transformers (:mod:`.tensors`): one tensor at a time, converted into the model's memory.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping

import torch

from ..vae import VAEConfig, WanVAE
from .files import SHOW, resolve_vae_file
from .layouts import strip_vae_prefix
from .tensors import StateDictSource, TensorSource, first_names, open_source, read_as

logger = logging.getLogger(__name__)


def infer_vae_config(shapes: Mapping[str, tuple[int, ...]]) -> VAEConfig:
    """Recover the :class:`~chameleon_core.vae.VAEConfig` from the tensor shapes of an (unprefixed) Wan VAE."""
    try:
        stem = tuple(shapes["encoder.conv1.weight"])
        z_dim = int(shapes["conv2.weight"][0])
        head_in = int(shapes["decoder.head.2.weight"][1])
    except KeyError as missing:
        raise ValueError(
            f"not a Wan VAE state dict: {missing} is missing; first keys: {first_names(sorted(shapes))}"
        ) from None
    nested = any(k.startswith("encoder.downsamples.") and ".downsamples." in k[len("encoder.downsamples.") :]
                 for k in shapes)  # fmt: skip
    family = {(3, False): "wan2.1", (12, True): "wan2.2"}.get((stem[1], nested))
    if family is None:
        raise ValueError(
            f"unknown Wan VAE layout: encoder.conv1 takes {stem[1]} channels and its stages are "
            f"{'nested' if nested else 'flat'} (Wan2.1: 3 and flat, Wan2.2: 12 and nested); first keys: "
            f"{first_names(sorted(shapes))}"
        )

    def children(prefix: str) -> list[str]:
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        found = {int(m.group(1)) for m in map(pattern.match, shapes) if m}
        return [f"{prefix}{i}." for i in sorted(found)]

    # Wan2.2 nests blocks per stage; Wan2.1 lists them flat, each stage ending in a resample.
    groups = [children(g + "downsamples.") for g in children("encoder.downsamples.")] if nested else [
        children("encoder.downsamples.")
    ]  # fmt: skip
    widths: list[list[int]] = []  # per stage: output width of each residual block
    temporal: list[bool] = []  # per resample: does it also halve time
    for group in groups:
        widths.append([])
        for block in group:
            if block + "residual.2.weight" in shapes:
                widths[-1].append(int(shapes[block + "residual.2.weight"][0]))
            elif block + "resample.1.weight" in shapes:
                temporal.append(block + "time_conv.weight" in shapes)
                if not nested:
                    widths.append([])
    dim = stem[0]
    if not widths[0] or any(len(w) != len(widths[0]) for w in widths) or len(temporal) != len(widths) - 1:
        raise ValueError(f"cannot read the encoder stages of this Wan VAE; first keys: {first_names(sorted(shapes))}")
    if any(w[-1] % dim for w in widths) or head_in % (widths[0][-1] // dim):
        raise ValueError(f"encoder stage widths {[w[-1] for w in widths]} are not multiples of the base width {dim}")
    dim_mult = tuple(w[-1] // dim for w in widths)
    return VAEConfig(
        family=family,
        dim=dim,
        decoder_dim=head_in // dim_mult[0],
        z_dim=z_dim,
        dim_mult=dim_mult,
        num_res_blocks=len(widths[0]),
        temporal_downsample=tuple(temporal),
    )


def check_vae_layout(config: VAEConfig, shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Raise unless ``shapes`` (unprefixed names) are exactly the state dict of a VAE built from ``config``."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in config.build().state_dict().items()}
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{source} does not have the layout of the Wan VAE its shapes suggest: missing {len(missing)} tensors "
            f"{missing[:SHOW]}, unexpected {len(unexpected)} {unexpected[:SHOW]}; is it a complete, original-format "
            "Wan VAE file?"
        )
    for k, want in expected.items():
        if tuple(shapes[k]) != want:
            raise ValueError(
                f"{source}: tensor {k} has shape {tuple(shapes[k])}, expected {want} for the inferred config; the "
                "file is damaged or mixes tensors from different VAEs"
            )


def _build(source: TensorSource, device: torch.device | None, dtype: torch.dtype | None) -> WanVAE:
    """Infer the config, check every name and shape, then fill a meta model tensor by tensor."""
    shapes = source.shapes()
    prefix, names = strip_vae_prefix(shapes, source.description)
    if len(names) < len(shapes):
        logger.info("%s: using %d tensors under %r, ignoring %d others", source.description, len(names), prefix,
                    len(shapes) - len(names))  # fmt: skip
    local = {k: shapes[raw] for k, raw in names.items()}
    config = infer_vae_config(local)
    check_vae_layout(config, local, source.description)
    stored = {source.dtypes()[names[k]] for k in local}
    if dtype is None and len(stored) != 1:
        raise ValueError(
            f"{source.description} mixes tensor dtypes {sorted(map(str, stored))}; pass dtype= to convert them"
        )
    # One tensor at a time, already converted: only the model's copy is ever complete.
    raw_to_name = {raw: k for k, raw in names.items()}
    tensors = {raw_to_name[raw]: read_as(source, raw, dtype=dtype, device=device) for raw in source.order(raw_to_name)}
    with torch.device("meta"):
        model = config.build()
    model.load_state_dict(tensors, strict=True, assign=True)
    return WanVAE(model, config)


def vae_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> WanVAE:
    """A :class:`~chameleon_core.vae.WanVAE` over an in-memory state dict (e.g. ComfyUI's ``vae.first_stage_model``).

    With ``device`` and ``dtype`` left as None the tensors are used as they are (no copy).
    """
    return _build(StateDictSource(state_dict), None if device is None else torch.device(device), dtype)


def load_vae(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WanVAE:
    """Load a Wan2.1 or Wan2.2 VAE from the released ``.pth`` or a (ComfyUI-repackaged) ``.safetensors`` file.

    ``path`` may also be a folder holding one of the known file names, or a path without its suffix. ``.pth`` files
    are read with ``torch.load(weights_only=True)``: a file that holds pickled code is refused.
    """
    start = time.perf_counter()
    file = resolve_vae_file(path)
    expected = "a Wan VAE state dict"
    with open_source([file], preferred=("state_dict", "vae", "model", "module"), expected=expected) as source:
        vae = _build(source, torch.device(device), dtype)
    logger.info("loaded %s VAE %s from %s in %.1fs", vae.config.family, vae.config, file, time.perf_counter() - start)
    return vae


__all__ = ["check_vae_layout", "infer_vae_config", "load_vae", "vae_from_state_dict"]
