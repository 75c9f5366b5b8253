"""Tensor-name layouts of the checkpoints we accept (``docs/design.md``, Checkpoints), and renaming them to our
model's names.

Transformer layouts, told apart by their tensor names (:func:`detect_layout`):

- ``wan``: the original Wan names (``tests/data/checkpoint-layouts/*.transformer.json``);
- ``comfyui``: ComfyUI repackages, the Wan names under ``model.diffusion_model.``;
- ``comfyui-fp8``: ComfyUI "scaled fp8": float8_e4m3fn weights with a fp32 ``<name>.scale_weight`` beside each
  ``<name>.weight`` and a ``scaled_fp8`` marker (ComfyUI's ``comfy/ops.py``); ``.scale_input`` keys (static
  activation scales) do not change the weights and are ignored;
- ``diffusers``: ``WanTransformer3DModel`` names, optionally under ``transformer.``; renamed with the explicit table
  :data:`DIFFUSERS_TO_WAN`;
- ``training``: ``.pt`` files from Self-Forcing-style trainers (FashionChameleon, CausVid, LongLive) holding
  ``generator`` / ``generator_ema`` state dicts with a ``model.`` prefix and FSDP's ``_fsdp_wrapped_module.``
  anywhere in the name.

VAEs have one layout, the original Wan names, possibly under prefixes that repackaged files add
(:func:`find_vae_prefix`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from .errors import CheckpointError
from .tensors import first_names

logger = logging.getLogger(__name__)

LAYOUTS = ("wan", "comfyui", "comfyui-fp8", "diffusers", "training")
"""Names returned by :func:`detect_layout`."""

COMFY_PREFIX = "model.diffusion_model."
TRAINING_PREFIX = "model."
DIFFUSERS_PREFIX = "transformer."
#: Module wrappers that insert a path component anywhere in a name: FSDP, activation checkpointing, torch.compile.
WRAPPER_TOKENS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
#: DistributedDataParallel / DataParallel put this in front of every name.
DDP_PREFIX = "module."
SCALED_FP8_MARKER = "scaled_fp8"
SCALE_WEIGHT = ".scale_weight"
SCALE_INPUT = ".scale_input"
TRAINING_KEYS = ("generator_ema", "generator")
"""Top-level entries of a training checkpoint, in the order they are preferred (the authors infer with the EMA)."""

#: diffusers ``WanTransformer3DModel`` module -> original Wan module, outside the blocks (verified against
#: diffusers 0.42.1). Parameter suffixes (``.weight`` / ``.bias``) carry over unchanged.
DIFFUSERS_TO_WAN: dict[str, str] = {
    "patch_embedding": "patch_embedding",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "proj_out": "head.head",
    "scale_shift_table": "head.modulation",
}

#: The same inside ``blocks.N.``. diffusers' ``norm2`` is the affine LayerNorm before cross-attention, which Wan
#: calls ``norm3``; the two non-affine norms have no parameters in either.
DIFFUSERS_TO_WAN_BLOCK: dict[str, str] = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn1.norm_q": "self_attn.norm_q",
    "attn1.norm_k": "self_attn.norm_k",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.norm_q": "cross_attn.norm_q",
    "attn2.norm_k": "cross_attn.norm_k",
    "norm2": "norm3",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
    "scale_shift_table": "modulation",
}

#: Name fragments of Wan variants this model does not implement -> what they are.
UNSUPPORTED_VARIANTS: dict[str, str] = {
    "condition_embedder.image_embedder.": "image-to-video (CLIP image embedder)",
    ".add_k_proj.": "image-to-video (image cross-attention)",
    ".add_v_proj.": "image-to-video (image cross-attention)",
    ".norm_added_k.": "image-to-video (image cross-attention)",
    "img_emb.": "image-to-video (CLIP image embedder)",
    ".k_img.": "image-to-video (image cross-attention)",
    ".v_img.": "image-to-video (image cross-attention)",
    ".norm_k_img.": "image-to-video (image cross-attention)",
    "vace_": "VACE (control blocks)",
}

VAE_PREFIXES = ("vae.", "first_stage_model.", "model.", "module.", "autoencoder.")
"""Prefixes that repackaged VAE files put in front of the original Wan names (ComfyUI, SD-style bundles, DDP)."""
_VAE_ANCHOR = "decoder.conv1.weight"

BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


# ---------------------------------------------------------------------------------------------------------------
# Wrappers
# ---------------------------------------------------------------------------------------------------------------


def strip_wrappers(name: str) -> str:
    """``name`` without the path components that FSDP, activation checkpointing and torch.compile insert."""
    for token in WRAPPER_TOKENS:
        name = name.replace(token, "")
    return name


def unwrap_state_dict_names(names: Iterable[str]) -> dict[str, str]:
    """Stored name -> model name for a state dict taken from a wrapped model in a training process.

    Strips :data:`WRAPPER_TOKENS` anywhere and DDP's ``module.`` in front (applied only when every name has it, so a
    model that really has a submodule called ``module`` keeps it).
    """
    names = list(names)
    stripped = {n: strip_wrappers(n) for n in names}
    if stripped and all(s.startswith(DDP_PREFIX) for s in stripped.values()):
        stripped = {n: s[len(DDP_PREFIX) :] for n, s in stripped.items()}
    return stripped


# ---------------------------------------------------------------------------------------------------------------
# Transformer layouts
# ---------------------------------------------------------------------------------------------------------------


def _is_wan_name(name: str) -> bool:
    # Only names no other Wan component uses: the umT5 encoder also has ``blocks.N.ffn``.
    top = ("patch_embedding.", "text_embedding.", "time_embedding.", "time_projection.", "head.head.")
    return name.startswith(top) or bool(re.match(r"blocks\.\d+\.(self_attn|cross_attn)\.", name))


def _is_diffusers_name(name: str) -> bool:
    return (
        name.startswith(("condition_embedder.", "proj_out."))
        or name == "scale_shift_table"
        or bool(re.match(r"blocks\.\d+\.(attn1|attn2|ffn\.net|scale_shift_table)", name))
    )


def detect_layout(keys: Iterable[str]) -> str:
    """Which layout a list of tensor names is in: one of :data:`LAYOUTS`.

    Raises a ValueError that says so when the names belong to a Wan VAE or a text encoder rather than a transformer,
    and one that lists the first names when the layout is unknown.
    """
    raw = list(keys)
    if not raw:
        raise CheckpointError("the checkpoint holds no tensors; pass a Wan transformer checkpoint")
    if any(k in TRAINING_KEYS or k.startswith(tuple(t + "." for t in TRAINING_KEYS)) for k in raw):
        return "training"
    names = [strip_wrappers(k) for k in raw]
    wrapped = names != raw
    scaled = any(k.endswith((SCALE_WEIGHT, SCALED_FP8_MARKER)) for k in names)
    comfy = [k[len(COMFY_PREFIX) :] for k in names if k.startswith(COMFY_PREFIX)]
    if comfy and any(_is_wan_name(k) for k in comfy):
        return "comfyui-fp8" if scaled else "comfyui"
    model = [k[len(TRAINING_PREFIX) :] for k in names if k.startswith(TRAINING_PREFIX)]
    if model and any(_is_wan_name(k) for k in model):
        return "training"
    bare = [k.removeprefix(DIFFUSERS_PREFIX) for k in names]
    if any(_is_diffusers_name(k) for k in bare):
        return "diffusers"
    if any(_is_wan_name(k) for k in names):
        if scaled:
            return "comfyui-fp8"
        return "training" if wrapped else "wan"
    raise _not_a_transformer(raw)


def _not_a_transformer(keys: Sequence[str]) -> CheckpointError:
    """The error for names that are no Wan DiT: says so for a VAE or a text encoder, else lists the first names."""
    names = [k.removeprefix("first_stage_model.").removeprefix("vae.") for k in keys]
    if any(k.startswith(("encoder.conv1.", "decoder.conv1.", "decoder.head.", "encoder.downsamples.")) for k in names):
        return CheckpointError(
            f"this is a VAE checkpoint (keys like {first_names([k for k in keys if 'coder.' in k], 3)}), not a Wan "
            "transformer; load it with ComfyUI's VAE loader and pick the diffusion model (the DiT) here"
        )
    if any(
        k.startswith(("encoder.block.", "shared.", "token_embedding.", "encoder.embed_tokens."))
        or re.match(r"blocks\.\d+\.(attn|ffn\.gate)\.", k)
        for k in names
    ):
        return CheckpointError(
            f"this is a text-encoder checkpoint (umT5; keys like {first_names(keys, 3)}), not a Wan transformer; "
            "load it with ComfyUI's CLIPLoader (type wan) and pick the diffusion model (the DiT) here"
        )
    return CheckpointError(
        f"unknown checkpoint layout: the tensor names match none of {list(LAYOUTS)}; first keys: "
        f"{first_names(keys)}. Pass a Wan DiT checkpoint (original Wan, ComfyUI repackage, diffusers "
        "WanTransformer3DModel, or a training .pt with generator / generator_ema)"
    )


def diffusers_to_wan(name: str) -> str | None:
    """A diffusers name (no prefix) -> the original Wan name, or None when the table has no entry."""
    m = BLOCK_RE.match(name)
    if m:
        table, head, rest = DIFFUSERS_TO_WAN_BLOCK, f"blocks.{m.group(1)}.", m.group(2)
    else:
        table, head, rest = DIFFUSERS_TO_WAN, "", name
    for module in sorted(table, key=len, reverse=True):
        if rest == module or rest.startswith(module + "."):
            return head + table[module] + rest[len(module) :]
    return None


@dataclass(frozen=True)
class Entry:
    """Where one model tensor comes from."""

    raw: str
    """Its stored name."""
    scale: str | None = None
    """The stored name of its ``scale_weight`` (scaled fp8)."""


@dataclass(frozen=True)
class Renamed:
    entries: dict[str, Entry]
    """Model name -> source."""
    unexpected: list[str]
    """Stored names that map to nothing."""


def rename(keys: Iterable[str], layout: str) -> Renamed:
    """Map stored tensor names to the model's names for a layout; refuse variants this model does not implement."""
    keys = list(keys)
    for k in keys:
        for fragment, what in UNSUPPORTED_VARIANTS.items():
            if fragment in "." + strip_wrappers(k):
                raise CheckpointError(
                    f"unsupported Wan variant: {k!r} belongs to a {what} model. FashionChameleon runs the "
                    "text-to-video / TI2V transformer (Wan2.2-TI2V-5B, or Wan2.1-T2V for other students); "
                    "pass that checkpoint instead"
                )
    entries: dict[str, Entry] = {}
    scales: dict[str, str] = {}
    unexpected: list[str] = []
    # An all-in-one ComfyUI checkpoint also carries its VAE and text encoders beside model.diffusion_model.
    comfy_prefixed = layout.startswith("comfyui") and any(strip_wrappers(k).startswith(COMFY_PREFIX) for k in keys)
    others = 0
    for k in keys:
        name = strip_wrappers(k)
        if comfy_prefixed and not name.startswith(COMFY_PREFIX):
            others += 1
            continue
        if layout == "training":
            name = name.removeprefix(TRAINING_PREFIX)
        elif layout in ("comfyui", "comfyui-fp8"):
            name = name.removeprefix(COMFY_PREFIX)
        elif layout == "diffusers":
            name = name.removeprefix(DIFFUSERS_PREFIX)
        if layout == "comfyui-fp8" and (name == SCALED_FP8_MARKER or name.endswith(SCALE_INPUT)):
            continue
        if layout == "comfyui-fp8" and name.endswith(SCALE_WEIGHT):
            scales[name[: -len(SCALE_WEIGHT)] + ".weight"] = k
            continue
        if layout == "diffusers":
            mapped = diffusers_to_wan(name)
            if mapped is None:
                unexpected.append(k)
                continue
            name = mapped
        if name in entries:
            raise CheckpointError(
                f"two tensors in the checkpoint map to the same model weight {name!r}: {entries[name].raw!r} and "
                f"{k!r}; the file mixes two layouts. Re-export it with one set of names"
            )
        entries[name] = Entry(k)
    for target, scale_key in scales.items():
        if target in entries:
            entries[target] = replace(entries[target], scale=scale_key)
        else:
            unexpected.append(scale_key)
    if others:
        logger.info("ignoring %d tensors outside %r (VAE / text encoders of an all-in-one file)", others, COMFY_PREFIX)
    return Renamed(entries, unexpected)


# ---------------------------------------------------------------------------------------------------------------
# VAE layout
# ---------------------------------------------------------------------------------------------------------------


def find_vae_prefix(names: Sequence[str], source: str) -> str:
    """The prefix in front of the Wan VAE names (``''`` for original files); raises for unknown layouts."""
    candidates = []
    for name in names:
        if name.endswith(_VAE_ANCHOR):
            prefix = name[: -len(_VAE_ANCHOR)]
            rest = prefix
            while rest:
                step = next((p for p in VAE_PREFIXES if rest.startswith(p)), None)
                if step is None:
                    break
                rest = rest[len(step) :]
            if not rest:
                candidates.append(prefix)
    if candidates:
        return min(candidates, key=len)
    if any(n.endswith(("decoder.conv_in.weight", "post_quant_conv.weight")) for n in names):
        raise CheckpointError(
            f"{source} is a diffusers AutoencoderKLWan checkpoint (keys like decoder.conv_in.weight), which is not "
            "supported; use the original Wan2.x_VAE.pth or ComfyUI's wan_2.1_vae / wan2.2_vae.safetensors"
        )
    raise CheckpointError(
        f"{source} is not a Wan VAE checkpoint of a known layout: no '{_VAE_ANCHOR}' (optionally under one of the "
        f"prefixes {list(VAE_PREFIXES)}); first keys: {first_names(sorted(names))}. Pass a Wan2.1 or Wan2.2 VAE file"
    )


def strip_vae_prefix(shapes: Mapping[str, object], source: str) -> tuple[str, dict[str, str]]:
    """The VAE's prefix and model name -> stored name for the tensors under it (others, e.g. a DiT, are left out)."""
    prefix = find_vae_prefix(list(shapes), source)
    return prefix, {k[len(prefix) :]: k for k in shapes if k.startswith(prefix)}
