"""ComfyUI's ``diffusion_models`` folder and model management -> the core's transformer: the loaders' combos and
:func:`load_model` (checkpoint kind, stream profile, LoRA, weight dtype, all refused with the input named)."""

from __future__ import annotations

import logging

import torch

from ...chameleon_core.checkpoints import checkpoint_kind, load_transformer
from ...chameleon_core.profiles import AUTO, PROFILE_NAMES, PROFILES, check_model_fits, resolve_profile
from ...chameleon_core.quant import quantize_blocks_fp8_
from ..errors import NOT_PUBLIC, node_error
from ..types import ChameleonModel, ModelHolder
from .native import COMFY_ATTENTION, comfy_precision

logger = logging.getLogger(__name__)


WEIGHT_DTYPES = ["default", "bf16", "fp16", "fp32", "fp8_e4m3fn"]


def diffusion_model_names() -> list[str]:
    """File names in ComfyUI's ``diffusion_models`` folders (the loaders' combo)."""
    import folder_paths

    return folder_paths.get_filename_list("diffusion_models")


def _compute_dtype(choice: str, device: torch.device) -> torch.dtype:
    import comfy.model_management as mm

    if choice == "fp32":
        return torch.float32
    if choice == "fp16":
        return torch.float16
    if choice in ("bf16", "fp8_e4m3fn") or mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32 if device.type == "cpu" else torch.float16


PROFILE_CHOICES = [AUTO, *PROFILE_NAMES]
"""The student loader's profile combo: ``auto`` reads it from the checkpoint."""


NO_LORA = "none"


def lora_names() -> list[str]:
    """``none`` and the files in ComfyUI's ``loras`` folders (the student loader's LoRA combo)."""
    import folder_paths

    return [NO_LORA, *folder_paths.get_filename_list("loras")]


def load_model(node: str, ckpt_name: str, weight_dtype: str, want: str, profile: str = AUTO,
               lora_name: str = NO_LORA) -> ChameleonModel:
    """Load ``ckpt_name`` from ``diffusion_models`` as a ``want`` (teacher/student) model under ComfyUI's model
    management, or explain why not. A student gets its stream profile (``profile``, or ``auto``: what the checkpoint
    says) and ``lora_name`` (from ``loras``) merged as it loads."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import folder_paths

    path = folder_paths.get_full_path("diffusion_models", ckpt_name)
    if path is None:
        folders = folder_paths.get_folder_paths("diffusion_models")
        raise node_error(node, "ckpt_name", ckpt_name, f"no such file in the diffusion_models folders {folders}",
                         "put the checkpoint into ComfyUI/models/diffusion_models and queue the workflow again"
                         + (f". Note: {NOT_PUBLIC[want]}" if want in NOT_PUBLIC else ""))
    if weight_dtype not in WEIGHT_DTYPES:
        raise node_error(node, "weight_dtype", weight_dtype, "unknown weight dtype", f"choose one of {WEIGHT_DTYPES}")
    try:
        kind = checkpoint_kind(path)
    except ValueError as e:  # not a transformer at all (a VAE, a text encoder, ...): the core says which
        raise node_error(node, "ckpt_name", ckpt_name, str(e), "pick a Wan transformer checkpoint") from None
    if kind != want:
        other = "ChameleonStudentLoader" if kind == "student" else "ChameleonTeacherLoader"
        raise node_error(
            node, "ckpt_name", ckpt_name,
            f"this is a {kind} checkpoint ({'causal few-step' if kind == 'student' else 'bidirectional'}), "
            f"but this node loads a {want}",
            f"load it with {other}, or pick a {want} checkpoint",
        )
    if profile not in PROFILE_CHOICES:
        raise node_error(node, "profile", profile, "unknown stream profile", f"choose one of {PROFILE_CHOICES}")
    lora_path = None
    if lora_name not in (None, NO_LORA):
        lora_path = folder_paths.get_full_path("loras", lora_name)
        if lora_path is None:
            raise node_error(node, "lora_name", lora_name, f"no such file in the loras folders "
                             f"{folder_paths.get_folder_paths('loras')}", "put the LoRA into ComfyUI/models/loras")
    try:
        prof, why = resolve_profile(profile, path) if want == "student" else (PROFILES["fashionchameleon"], "")
    except ValueError as e:
        raise node_error(node, "profile", profile, str(e), f"pick the profile by hand: one of {PROFILE_NAMES}") from None
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    compute = _compute_dtype(weight_dtype, load_device)
    try:  # every load failure of the core is one CheckpointError (a ValueError) naming the file and the fix
        model = load_transformer(path, dtype=compute, device=offload_device, lora=lora_path,
                                 lora_scale=prof.lora_alpha_over_rank, prefer=prof.weights_entry)
    except ValueError as e:
        where = "lora_name" if lora_path is not None and "LoRA" in str(e) else "ckpt_name"
        raise node_error(node, where, lora_name if where == "lora_name" else ckpt_name, str(e),
                         "re-download the file or pick another checkpoint") from None
    if want == "student":
        check_model_fits(prof, model.config)
        logger.info("%s: %s streams with the %s profile (%s)", node, ckpt_name, prof.name, why)
    if weight_dtype == "fp8_e4m3fn":
        quantize_blocks_fp8_(model, compute)  # the blocks' linears stored in fp8, computed in `compute`
    model.precision = comfy_precision(compute)  # ComfyUI's policy, the one the native-MODEL view follows too
    model.attention = COMFY_ATTENTION  # this model's attention is ComfyUI's (--use-sage-attention, ...)
    patcher = comfy.model_patcher.ModelPatcher(ModelHolder(model), load_device=load_device,
                                               offload_device=offload_device)
    logger.info("%s: %s loaded as %s (%s, compute %s)", node, ckpt_name, want, model.config.name, compute)
    return ChameleonModel(patcher=patcher, kind=want, name=ckpt_name, profile=prof.name)
