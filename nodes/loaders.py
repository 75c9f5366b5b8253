"""Teacher and student loaders (files from ComfyUI's ``diffusion_models`` folder, under its model management) and the
tiny decoder loader (TAEHV ``taew2_1`` / ``taew2_2`` from ``vae_approx``)."""

from __future__ import annotations

from comfy_api.latest import io

from . import adapters
from .types import ModelSocket, PreviewDecoderSocket


def _inputs(kind: str) -> list:
    return [
        io.Combo.Input("ckpt_name", options=adapters.diffusion_model_names(),
                       tooltip=f"A {kind} Wan transformer from models/diffusion_models (any Wan layout: original, "
                               "ComfyUI repack incl. scaled fp8, diffusers, or a training .pt)."),
        io.Combo.Input("weight_dtype", options=adapters.WEIGHT_DTYPES, default="default",
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
        return io.NodeOutput(adapters.load_model("ChameleonTeacherLoader", ckpt_name, weight_dtype, "teacher"))


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
        return io.NodeOutput(adapters.load_model("ChameleonStudentLoader", ckpt_name, weight_dtype, "student"))


class ChameleonTinyDecoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ChameleonTinyDecoderLoader",
            display_name="FashionChameleon Tiny Decoder Loader",
            category="FashionChameleon/loaders",
            description="Loads the tiny streaming video decoder (TAEHV) for live previews and the live path; the "
                        "full Wan VAE stays the decoder for final renders.",
            inputs=[
                io.Combo.Input("decoder_name", options=adapters.tiny_decoder_names(),
                               tooltip="A TAEHV video decoder from models/vae_approx: taew2_2 for Wan2.2 models, "
                                       "taew2_1 for Wan2.1 (madebyollin/taehv, .safetensors or .pth)."),
                io.Combo.Input("weight_dtype", options=adapters.TINY_DECODER_DTYPES, default="default",
                               tooltip="Weight and compute dtype. default: fp32 on CPU, fp16/bf16 on a GPU."),
            ],
            outputs=[PreviewDecoderSocket.Output(display_name="decoder")],
        )

    @classmethod
    def execute(cls, decoder_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(adapters.load_tiny_decoder("ChameleonTinyDecoderLoader", decoder_name, weight_dtype))


class ChameleonNativeModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ChameleonNativeModel",
            display_name="FashionChameleon Model From Native MODEL",
            category="FashionChameleon/loaders",
            description="Streams (or samples the teacher) on a MODEL from ComfyUI's own loaders: Load Diffusion Model "
                        "(any weight dtype, scaled fp8 included), GGUF loaders, and what patches them (LoRA, "
                        "ModelSamplingSD3's shift). ComfyUI's weight casting, quantised ops, LoRA patches and "
                        "low-VRAM partial loading apply; the KV cache, chunk step and switches are the pack's.",
            inputs=[
                io.Model.Input("model", tooltip="A FashionChameleon Wan transformer loaded by UNETLoader (or a GGUF "
                                                "loader), optionally through LoraLoaderModelOnly / ModelSamplingSD3."),
                io.Combo.Input("kind", options=adapters.MODEL_KINDS, default="student",
                               tooltip="student: the causal few-step streaming model; teacher: the bidirectional "
                                       "in-context teacher. ComfyUI's loaders do not keep the file's role tag."),
            ],
            outputs=[ModelSocket.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, kind: str) -> io.NodeOutput:
        return io.NodeOutput(adapters.native_model("ChameleonNativeModel", model, kind))
