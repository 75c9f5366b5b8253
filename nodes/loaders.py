"""Teacher and student loaders (files from ComfyUI's ``diffusion_models`` folder, under its model management), the
tiny decoder loader (TAEHV ``taew2_1`` / ``taew2_2`` from ``vae_approx``), and the two loaders that make the pack run
with no full-size downloads: a Wan VAE of any size (``vae``, returned as a ComfyUI VAE) and prompt features from a
file (``prompt_embeddings``, returned as a CONDITIONING; no umT5-XXL).

Every loader checks its file at validation (``validate_inputs``), so one error lists all missing files of a
workflow at the first Run."""

from __future__ import annotations

from comfy_api.latest import io

from ..chameleon_core.profiles import PROFILE_NAMES
from .adapters.model_files import (
    PROMPT_FOLDER,
    load_prompt_conditioning,
    load_wan_vae,
    missing_files,
    prompt_embedding_names,
    vae_names,
)
from .adapters.models import NO_LORA, PROFILE_CHOICES, WEIGHT_DTYPES, diffusion_model_names, load_model, lora_names
from .adapters.native import MODEL_KINDS, native_model
from .adapters.tiny_decoder import TINY_DECODER_DTYPES, load_tiny_decoder, tiny_decoder_names
from .errors import NOT_PUBLIC
from .sockets import ModelSocket, PreviewDecoderSocket, with_aliases


def _missing_model(ckpt_name: str, kind: str) -> bool | str:
    """Validation of a teacher / student file: True, or the missing-file text plus what to load instead."""
    missing = missing_files({"ckpt_name": ("diffusion_models", ckpt_name)})
    return missing if missing is True else f"{missing}. Note: {NOT_PUBLIC[kind]}."


def _inputs(kind: str) -> list:
    return [
        io.Combo.Input("ckpt_name", options=diffusion_model_names(),
                       tooltip=f"A {kind} Wan transformer from models/diffusion_models (any Wan layout: original, "
                               "ComfyUI repack incl. scaled fp8, diffusers, or a training .pt)."),
        io.Combo.Input("weight_dtype", options=WEIGHT_DTYPES, default="default",
                       tooltip="Weight storage. default: bf16 where the device supports it. fp8_e4m3fn stores block "
                               "weights in fp8 (half of bf16) and computes in bf16."),
    ]


class ChameleonTeacherLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            node_id="ChameleonTeacherLoader",
            display_name="FashionChameleon Teacher Loader",
            category="FashionChameleon/loaders",
            description="Loads the bidirectional in-context teacher (Wan2.2-TI2V-5B fine-tune).",
            inputs=_inputs("teacher (bidirectional)"),
            outputs=[ModelSocket.Output(display_name="teacher")],
        ))

    @classmethod
    def validate_inputs(cls, ckpt_name: str) -> bool | str:
        return _missing_model(ckpt_name, "teacher")

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(load_model("ChameleonTeacherLoader", ckpt_name, weight_dtype, "teacher"))


def profile_input(default: str) -> io.Combo.Input:
    """The stream-profile combo of the student loaders (docs/profiles.md)."""
    return io.Combo.Input(
        "profile", options=PROFILE_CHOICES if default == "auto" else PROFILE_NAMES,
        default=default, optional=True,
        tooltip="The student's own streaming loop (chunk, window, sink, steps): fashionchameleon (reference + "
                "garment), longlive2 (LongLive 2.0, Wan2.2-5B), longlive1 (LongLive 1.0), self_forcing, causvid "
                "(Wan2.1-1.3B). auto: what the file says (metadata, LongLive's merged file, a file name naming the "
                "project), else fashionchameleon.")


class ChameleonStudentLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            aliases=("longlive", "self-forcing", "causvid", "text to video", "image to video"),
            node_id="ChameleonStudentLoader",
            display_name="FashionChameleon Student Loader",
            category="FashionChameleon/loaders",
            description="Loads a causal few-step streaming student: FashionChameleon's, or a public one (LongLive "
                        "2.0 / 1.0, Self-Forcing, CausVid) as its project publishes it, streamed with its own loop "
                        "(the profile).",
            inputs=[*_inputs("student (causal, few-step)"), profile_input("auto"),
                    io.Combo.Input("lora_name", options=lora_names(), default=NO_LORA,
                                   optional=True,
                                   tooltip="A LoRA from models/loras merged into the student as it loads (LongLive "
                                           "1.0: lora.pt with longlive_base.pt); none for a merged file.")],
            outputs=[ModelSocket.Output(display_name="student")],
        ))

    @classmethod
    def validate_inputs(cls, ckpt_name: str, lora_name: str = NO_LORA) -> bool | str:
        missing = _missing_model(ckpt_name, "student")
        if lora_name not in (None, NO_LORA):
            lora = missing_files({"lora_name": ("loras", lora_name)})
            if lora is not True:
                missing = lora if missing is True else f"{missing}\n{lora}"
        return missing

    @classmethod
    def execute(cls, ckpt_name: str, weight_dtype: str, profile: str = "auto",
                lora_name: str = NO_LORA) -> io.NodeOutput:
        return io.NodeOutput(load_model("ChameleonStudentLoader", ckpt_name, weight_dtype, "student",
                                                 profile=profile, lora_name=lora_name))


class ChameleonTinyDecoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            node_id="ChameleonTinyDecoderLoader",
            display_name="FashionChameleon Tiny Decoder Loader",
            category="FashionChameleon/loaders",
            description="Loads the tiny streaming video decoder (TAEHV) for live previews and the live path; the "
                        "full Wan VAE stays the decoder for final renders.",
            inputs=[
                io.Combo.Input("decoder_name", options=tiny_decoder_names(),
                               tooltip="A TAEHV video decoder from models/vae_approx: taew2_2 for Wan2.2 models, "
                                       "taew2_1 for Wan2.1 (madebyollin/taehv, .safetensors or .pth)."),
                io.Combo.Input("weight_dtype", options=TINY_DECODER_DTYPES, default="default",
                               tooltip="Weight and compute dtype. default: fp32 on CPU, fp16/bf16 on a GPU."),
            ],
            outputs=[PreviewDecoderSocket.Output(display_name="decoder")],
        ))

    @classmethod
    def validate_inputs(cls, decoder_name: str) -> bool | str:
        return missing_files({"decoder_name": ("vae_approx", decoder_name)})

    @classmethod
    def execute(cls, decoder_name: str, weight_dtype: str) -> io.NodeOutput:
        return io.NodeOutput(load_tiny_decoder("ChameleonTinyDecoderLoader", decoder_name, weight_dtype))


class ChameleonNativeModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            aliases=("native", "unet", "gguf", "lora", "fp8"),
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
                io.Combo.Input("kind", options=MODEL_KINDS, default="student",
                               tooltip="student: the causal few-step streaming model; teacher: the bidirectional "
                                       "in-context teacher. ComfyUI's loaders do not keep the file's role tag."),
                profile_input("fashionchameleon"),
            ],
            outputs=[ModelSocket.Output(display_name="model")],
        ))

    @classmethod
    def execute(cls, model, kind: str, profile: str = "fashionchameleon") -> io.NodeOutput:
        return io.NodeOutput(native_model("ChameleonNativeModel", model, kind, profile))
class ChameleonVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            aliases=("vae", "any size vae", "small vae", "demo"),
            node_id="ChameleonVAELoader",
            display_name="FashionChameleon VAE Loader (any size)",
            category="FashionChameleon/loaders",
            description="Loads a Wan2.1 / Wan2.2 VAE of any width from models/vae as a ComfyUI VAE (the core "
                        "VAELoader builds only the released sizes): the demo's small VAE, or one you trained. The "
                        "released VAEs load here too.",
            inputs=[io.Combo.Input("vae_name", options=vae_names(),
                                   tooltip="A Wan VAE in models/vae, any size (e.g. fashionchameleon_demo_vae, "
                                           "shipped in the pack's demo/ folder).")],
            outputs=[io.Vae.Output(display_name="vae")],
        ))

    @classmethod
    def validate_inputs(cls, vae_name: str) -> bool | str:
        return missing_files({"vae_name": ("vae", vae_name)})

    @classmethod
    def execute(cls, vae_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_wan_vae("ChameleonVAELoader", vae_name))


class ChameleonPromptEmbeddings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(**with_aliases(
            aliases=("prompt", "embeddings", "conditioning", "text", "demo"),
            node_id="ChameleonPromptEmbeddings",
            display_name="FashionChameleon Prompt Embeddings",
            category="FashionChameleon/loaders",
            description="Loads precomputed prompt features from models/prompt_embeddings as a CONDITIONING, so a "
                        "stream runs without the umT5-XXL text encoder (~11 GB). Files are written by python -m "
                        "chameleon_core.tools.prompt_embeds; the demo's ships in the pack's demo/ folder.",
            inputs=[io.Combo.Input("embeddings_name", options=prompt_embedding_names(),
                                   tooltip="A .safetensors of prompt features [1, L, D] (tensor 'context'); D must "
                                           "be the student's text width.")],
            outputs=[io.Conditioning.Output(display_name="positive"),
                     io.String.Output(display_name="prompt")],
        ))

    @classmethod
    def validate_inputs(cls, embeddings_name: str) -> bool | str:
        return missing_files({"embeddings_name": (PROMPT_FOLDER, embeddings_name)})

    @classmethod
    def execute(cls, embeddings_name: str) -> io.NodeOutput:
        conditioning, prompt = load_prompt_conditioning("ChameleonPromptEmbeddings", embeddings_name)
        return io.NodeOutput(conditioning, prompt)
