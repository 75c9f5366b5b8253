"""Teacher and student loaders: files from ComfyUI's ``diffusion_models`` folder, under its model management."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

import comfy.model_management as mm
import comfy.model_patcher
import folder_paths

from ._core import loading, quant
from .errors import node_error
from .types import ChameleonModel, ModelHolder, ModelSocket

logger = logging.getLogger(__name__)

WEIGHT_DTYPES = ["default", "bf16", "fp16", "fp32", "fp8_e4m3fn"]


def _compute_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice == "fp32":
        return torch.float32
    if choice == "fp16":
        return torch.float16
    if choice in ("bf16", "fp8_e4m3fn") or mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32 if device.type == "cpu" else torch.float16


def load_model(node: str, ckpt_name: str, weight_dtype: str, want: str) -> ChameleonModel:
    """Load ``ckpt_name`` from ``diffusion_models`` as a ``want`` (teacher/student) model, or explain why not."""
    path = folder_paths.get_full_path("diffusion_models", ckpt_name)
    if path is None:
        folders = folder_paths.get_folder_paths("diffusion_models")
        raise node_error(node, "ckpt_name", ckpt_name, f"no such file in the diffusion_models folders {folders}",
                         "put the checkpoint into ComfyUI/models/diffusion_models and refresh the browser")
    if weight_dtype not in WEIGHT_DTYPES:
        raise node_error(node, "weight_dtype", weight_dtype, "unknown weight dtype", f"choose one of {WEIGHT_DTYPES}")
    try:
        kind = loading.checkpoint_kind(path)
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
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    compute = _compute_dtype(weight_dtype, load_device)
    model = loading.load_transformer(path, dtype=compute, device=offload_device)
    if weight_dtype == "fp8_e4m3fn":
        quant.quantize_blocks_fp8_(model, compute)
    patcher = comfy.model_patcher.ModelPatcher(ModelHolder(model), load_device=load_device,
                                               offload_device=offload_device)
    logger.info("%s: %s loaded as %s (%s, compute %s)", node, ckpt_name, want, model.config.name, compute)
    return ChameleonModel(patcher=patcher, kind=want, name=ckpt_name)


def _inputs(kind: str) -> list:
    return [
        io.Combo.Input("ckpt_name", options=folder_paths.get_filename_list("diffusion_models"),
                       tooltip=f"A {kind} Wan transformer from models/diffusion_models (any Wan layout: original, "
                               "ComfyUI repack incl. scaled fp8, diffusers, or a training .pt)."),
        io.Combo.Input("weight_dtype", options=WEIGHT_DTYPES, default="default",
                       tooltip="Weight storage. default: bf16 where the device supports it. fp8_e4m3fn stores block "
                               "weights in fp8 (half of bf16) and computes in bf16."),
    ]


class ChameleonTeacherLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ChameleonTeacherLoader",
            display_name="FashionChameleon Teacher Loader",
            category="FashionChameleon/loaders",
            description="Loads the bidirectional in-context teacher (Wan2.2-TI2V-5B fine-tune).",
            inputs=_inputs("teacher (bidirectional)"),
            outputs=[ModelSocket.Output(display_name="teacher")],
        )

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(load_model("ChameleonTeacherLoader", ckpt_name, weight_dtype, "teacher"))


class ChameleonStudentLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ChameleonStudentLoader",
            display_name="FashionChameleon Student Loader",
            category="FashionChameleon/loaders",
            description="Loads the causal few-step streaming student (distilled from the teacher).",
            inputs=_inputs("student (causal, few-step)"),
            outputs=[ModelSocket.Output(display_name="student")],
        )

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(load_model("ChameleonStudentLoader", ckpt_name, weight_dtype, "student"))
