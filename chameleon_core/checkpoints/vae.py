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
from dataclasses import replace

import torch

from ..vae import VAEConfig, WanVAE
from .errors import CheckpointError, check_device, load_errors
from .files import SHOW, resolve_vae_file
from .layouts import strip_vae_prefix
from .tensors import (
    FiniteCheck,
    StateDictSource,
    TensorSource,
    first_names,
    open_source,
    read_as,
)

logger = logging.getLogger(__name__)


def infer_vae_config(shapes: Mapping[str, tuple[int, ...]]) -> VAEConfig:
    """Recover the :class:`~chameleon_core.vae.VAEConfig` from the tensor shapes of an (unprefixed) Wan VAE."""
    try:
        stem = tuple(shapes["encoder.conv1.weight"])
        z_dim = int(shapes["conv2.weight"][0])
        head_in = int(shapes["decoder.head.2.weight"][1])
    except KeyError as missing:
        raise CheckpointError(
            f"not a Wan VAE state dict: {missing} is missing; first keys: {first_names(sorted(shapes))}"
        ) from None
    nested = any(k.startswith("encoder.downsamples.") and ".downsamples." in k[len("encoder.downsamples.") :]
                 for k in shapes)  # fmt: skip
    family = {(3, False): "wan2.1", (12, True): "wan2.2"}.get((stem[1], nested))
    if family is None:
        raise CheckpointError(
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
        raise CheckpointError(f"cannot read the encoder stages of this Wan VAE; first keys: {first_names(sorted(shapes))}")
    if any(w[-1] % dim for w in widths):
        raise CheckpointError(
            f"encoder stage widths {[w[-1] for w in widths]} are not multiples of the base width {dim} "
            f"(encoder.conv1.weight); the file is damaged or not a Wan VAE: re-download it"
        )
    dim_mult = tuple(w[-1] // dim for w in widths)
    decoder_dim = head_in // dim_mult[0]
    conv1 = shapes.get("decoder.conv1.weight")
    if (head_in % dim_mult[0] or decoder_dim < 1) and conv1 and conv1[0] % dim_mult[-1] == 0:
        decoder_dim = int(conv1[0]) // dim_mult[-1]  # decoder.head.2 is damaged: the shape check names it
    return VAEConfig(
        family=family,
        dim=dim,
        decoder_dim=max(decoder_dim, 1),
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
        raise CheckpointError(
            f"{source} does not have the layout of the Wan VAE its shapes suggest: missing {len(missing)} tensors "
            f"{missing[:SHOW]}, unexpected {len(unexpected)} {unexpected[:SHOW]}; is it a complete, original-format "
            "Wan VAE file?"
        )
    wrong = [k for k, want in expected.items() if tuple(shapes[k]) != want]
    if wrong:
        k = wrong[0]
        more = f" ({len(wrong)} tensors differ: {wrong[:SHOW]})" if len(wrong) > 1 else ""
        raise CheckpointError(
            f"{source}: tensor {k} has shape {tuple(shapes[k])}, expected {expected[k]} for the VAE the other "
            f"tensors describe ({config.family}, z_dim={config.z_dim}, decoder_dim={config.decoder_dim}){more}; the "
            "file is damaged or mixes tensors from different VAEs: re-download it"
        )


def _mismatches(config: VAEConfig, shapes: Mapping[str, tuple[int, ...]]) -> int:
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in config.build().state_dict().items()}
    return sum(1 for k, want in expected.items() if k not in shapes or tuple(shapes[k]) != want)


def _most_consistent_config(config: VAEConfig, shapes: Mapping[str, tuple[int, ...]]) -> VAEConfig:
    """The config that the most tensors agree with, so that a shape error names the damaged tensor.

    :func:`infer_vae_config` reads the decoder width from ``decoder.head.2.weight`` alone; if that one tensor is
    damaged, every other decoder tensor would look wrong instead. ``decoder.conv1.weight`` gives the width too: of
    the two readings, the one that leaves fewer mismatched tensors wins.
    """
    conv1 = shapes.get("decoder.conv1.weight")
    if not conv1 or conv1[0] % config.dim_mult[-1]:
        return config
    alt = int(conv1[0]) // config.dim_mult[-1]
    if alt == config.decoder_dim or alt < 1:
        return config
    try:
        other = replace(config, decoder_dim=alt)
    except ValueError:
        return config
    return other if _mismatches(other, shapes) < _mismatches(config, shapes) else config


def _plan(source: TensorSource) -> tuple[VAEConfig, dict[str, str], dict[str, tuple[int, ...]]]:
    """From names and shapes only: the config, the model name -> stored name map, and the model names' shapes (every
    name and shape checked)."""
    shapes = source.shapes()
    prefix, names = strip_vae_prefix(shapes, source.description)
    if len(names) < len(shapes):
        logger.info("%s: using %d tensors under %r, ignoring %d others", source.description, len(names), prefix,
                    len(shapes) - len(names))  # fmt: skip
    local = {k: shapes[raw] for k, raw in names.items()}
    config = _most_consistent_config(infer_vae_config(local), local)
    check_vae_layout(config, local, source.description)
    return config, names, local


def _build(source: TensorSource, device: torch.device | None, dtype: torch.dtype | None) -> WanVAE:
    """Infer the config, check every name and shape, then fill a meta model tensor by tensor."""
    config, names, local = _plan(source)
    stored = {source.dtypes()[names[k]] for k in local}
    if dtype is None and len(stored) != 1:
        raise CheckpointError(
            f"{source.description} mixes tensor dtypes {sorted(map(str, stored))}; pass dtype= to convert them"
        )
    # One tensor at a time, already converted: only the model's copy is ever complete.
    raw_to_name = {raw: k for k, raw in names.items()}
    tensors = {raw_to_name[raw]: read_as(source, raw, dtype=dtype, device=device) for raw in source.order(raw_to_name)}
    finite = FiniteCheck()
    for k, t in tensors.items():
        finite.add(names[k], t)
    finite.check(f"VAE {source.description}")
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


VAE_ENTRIES = ("state_dict", "vae", "model", "module")
"""Entries of a ``.pt`` that may hold the VAE's state dict."""
NOT_A_VAE = ("a Wan VAE file holds one state dict, so this is another kind of checkpoint (a training checkpoint of "
             "the transformer holds generator / generator_ema / critic); pass the Wan VAE itself: Wan2.2_VAE.pth or "
             "wan2.2_vae.safetensors (Wan2.1: Wan2.1_VAE.pth / wan_2.1_vae.safetensors)")
"""The fix when a ``.pt`` given as a VAE holds several state dicts (load_vae has no ``which=``)."""


def _open_vae(file: os.PathLike[str]) -> TensorSource:
    return open_source([file], preferred=VAE_ENTRIES, expected="a Wan VAE state dict", choose=NOT_A_VAE)


def inspect_vae(path: str | os.PathLike[str]) -> VAEConfig:
    """The config of a VAE file (family, latent channels, widths) from its names and shapes only; no weight is read.
    Raises :class:`CheckpointError` for everything :func:`load_vae` would refuse by its headers."""
    file = resolve_vae_file(path)
    with load_errors(file, "a Wan VAE"), _open_vae(file) as source:
        return _plan(source)[0]


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
    dev = check_device(device, f"the VAE {path}")
    file = resolve_vae_file(path)
    with load_errors(file, "a Wan VAE"), _open_vae(file) as source:
        vae = _build(source, dev, dtype)
    vae.source = str(file)
    logger.info("loaded %s VAE %s from %s in %.1fs", vae.config.family, vae.config, file, time.perf_counter() - start)
    return vae


__all__ = ["check_vae_layout", "infer_vae_config", "inspect_vae", "load_vae", "vae_from_state_dict"]
