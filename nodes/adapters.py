"""The one ComfyUI adapter layer: every conversion between ComfyUI's objects and the core, and the core API the
nodes call.

Node files import only this module, ``types``, ``errors`` and ``progress`` (and ``comfy_api.latest.io``). Here:

- ComfyUI's ``diffusion_models`` folder and model management -> a core transformer (:func:`load_model`);
- ComfyUI's VAE -> the latent family (:func:`vae_family`), single-image encode (:func:`encode_image`), and the
  codec (:class:`ComfyCodec`): ComfyUI's own encode for single images, as the conditions are encoded, and the core
  streaming decoder over ComfyUI's VAE weights for decode (carried causal state: one continuous video);
- ComfyUI's ``vae_approx`` folder -> the tiny TAEHV decoder (:func:`tiny_decoder_names`, :func:`load_tiny_decoder`)
  and its per-chunk frame previews (:class:`TinyPreview`);
- CONDITIONING -> prompt features (:func:`conditioning_tensor`); IMAGE ``[B, H, W, C]`` in 0..1 <-> the core's
  video ``[B, 3, T, H, W]`` in [-1, 1] (:func:`image_to_video`, :func:`video_to_image`); LATENT segments -> one
  latent video (:func:`latent_segments`);
- the checks that turn wrong connections into node errors (``check_*``).

ComfyUI modules (``comfy``, ``folder_paths``, and ``types``, which declares the sockets) are imported inside the
functions that use them, so the conversions import and run without ComfyUI (the tests load the pack as a package
and call them directly).
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from typing import TYPE_CHECKING

import torch

from ..chameleon_core.checkpoints import checkpoint_kind, load_transformer
from ..chameleon_core.config import StreamSettings
from ..chameleon_core.decoding import StreamingDecoder, decode_chunks
from ..chameleon_core.stream_options import ConditionWeighting, SourceVideo, latent_mask
from ..chameleon_core.images import to_pixels
from ..chameleon_core.latents import LatentFamily, latent_family
from ..chameleon_core.memory import MemoryBudgetError
from ..chameleon_core.profiles import AUTO, PROFILE_NAMES, PROFILES, check_model_fits, resolve_profile
from ..chameleon_core.quant import quantize_blocks_fp8_
from ..chameleon_core.rescheduling import switch_garment, switch_prompt
from ..chameleon_core.samplers import sample_teacher
from ..chameleon_core.session import Session, encode_condition
from ..chameleon_core.streaming import (
    NonFiniteChunkError,
    StreamState,
    chunks_for,
    latent_frames_for,
    start_stream,
    with_options,
)
from ..chameleon_core.taehv import (
    TAEHV_PRESETS,
    TinyVideoDecoder,
    infer_taehv_config,
    load_taehv,
)
from ..chameleon_core.tryon import keyframe_then_fill
from ..chameleon_core.vae import WanVAE
from .errors import NOT_PUBLIC, node_error, rewrap
from .model_files import (
    PROMPT_FOLDER,
    load_for_decode,
    load_prompt_conditioning,
    load_wan_vae,
    managed_view,
    missing_files,
    prompt_embedding_names,
    vae_names,
)
from .native import MODEL_KINDS, comfy_attention, install_comfy_attention, native_model
from .segments import SEGMENT_KEY, join_segments, latent_segments, segment_latent
from .stream_options import (
    apply_model_weighting,
    check_strength,
    parse_weight_values,
    source_video,
    teacher_weights,
)

if TYPE_CHECKING:  # types.py declares the sockets, so it imports comfy_api
    from .types import (
        ChameleonConditions,
        ChameleonModel,
        ChameleonPreviewDecoder,
        ChameleonStream,
    )

logger = logging.getLogger(__name__)

__all__ = [
    "MemoryBudgetError",
    # the core API the nodes call, through this one module
    "NonFiniteChunkError", "Session", "StreamSettings", "chunks_for", "decode_chunks", "encode_condition",
    "latent_frames_for", "latent_family", "sample_teacher", "start_stream", "switch_garment", "switch_prompt",
    "ConditionWeighting", "SourceVideo", "keyframe_then_fill", "latent_mask", "with_options",
    "apply_model_weighting", "check_strength", "parse_weight_values", "source_video", "teacher_weights",
    # the adapters (model files: model_files.py)
    "NO_LORA", "PROFILE_CHOICES", "PROFILE_NAMES", "PROFILE_VALUE", "PROMPT_FOLDER", "SEGMENT_KEY", "lora_names", "TINY_DECODER_DTYPES", "WEIGHT_DTYPES", "ComfyCodec", "TinyPreview",
    "check_conditions", "check_decoder", "check_garment_stream", "check_person_conditions", "check_resolution", "check_student", "check_student_stream", "check_teacher",
    "check_vae", "codec", "conditioning_tensor", "diffusion_model_names", "encode_image", "encode_text",
    "MODEL_KINDS", "comfy_attention", "first_image", "image_to_video", "install_comfy_attention",
    "is_tiny_decoder_file", "join_segments",
    "latent_segments", "load_input_image", "load_model", "load_prompt_conditioning", "load_tiny_decoder",
    "load_wan_vae", "missing_files", "native_model", "prompt_embedding_names", "segment_latent", "streaming_vae",
    "tiny_decoder_names", "vae_family", "vae_names",
    "video_to_image",
]

# -------------------------------------------------------------------------------------------------------------------
# Models: ComfyUI's diffusion_models folder and model management
# -------------------------------------------------------------------------------------------------------------------

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

    from .types import ChameleonModel, ModelHolder

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
        quantize_blocks_fp8_(model, compute)
    patcher = comfy.model_patcher.ModelPatcher(ModelHolder(model), load_device=load_device,
                                               offload_device=offload_device)
    logger.info("%s: %s loaded as %s (%s, compute %s)", node, ckpt_name, want, model.config.name, compute)
    return ChameleonModel(patcher=patcher, kind=want, name=ckpt_name, profile=prof.name)


# -------------------------------------------------------------------------------------------------------------------
# VAE: family, single-image encode, the codec (ComfyUI encode + core streaming decode over ComfyUI's weights)
# -------------------------------------------------------------------------------------------------------------------


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


_codecs: weakref.WeakKeyDictionary[object, ComfyCodec] = weakref.WeakKeyDictionary()


def codec(vae) -> ComfyCodec:
    """The codec of a ComfyUI VAE object, built once per object (it goes when the VAE goes)."""
    if vae not in _codecs:
        _codecs[vae] = ComfyCodec(vae)
    return _codecs[vae]


def streaming_vae(vae, latent_shape: tuple[int, ...] | None = None) -> WanVAE:
    """The core streaming VAE over a ComfyUI VAE's own weights, loaded by ComfyUI's model management (with room
    for decoding chunks of ``latent_shape``)."""
    c = codec(vae)
    return c.decoder if latent_shape is None else c.decoder_for(latent_shape)


# -------------------------------------------------------------------------------------------------------------------
# Tiny decoder: ComfyUI's vae_approx folder -> the core's TAEHV decoder; per-chunk frame previews
# -------------------------------------------------------------------------------------------------------------------

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

    from .types import ChameleonPreviewDecoder

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


# -------------------------------------------------------------------------------------------------------------------
# CONDITIONING, IMAGE and LATENT
# -------------------------------------------------------------------------------------------------------------------


def conditioning_tensor(node: str, name: str, conditioning) -> torch.Tensor:
    """The prompt features ``[1, L, D]`` inside a ComfyUI CONDITIONING."""
    try:
        tensor = conditioning[0][0]
    except (TypeError, IndexError, KeyError):
        tensor = None
    if not isinstance(tensor, torch.Tensor):
        raise node_error(node, name, conditioning, "not a CONDITIONING",
                         "connect CLIPTextEncode fed by a CLIPLoader of type wan")
    if len(conditioning) > 1:
        logger.warning("%s: %s holds %d conditionings; using the first", node, name, len(conditioning))
    return tensor


def encode_text(clip, text: str) -> torch.Tensor:
    """Prompt text -> prompt features ``[1, L, D]`` with a ComfyUI CLIP (as CLIPTextEncode does)."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))[0][0]


def load_input_image(name: str) -> torch.Tensor:
    """An image in ComfyUI's input folder (an upload name, ``[subfolder/]name [type]``) -> IMAGE ``[1, H, W, 3]``
    in 0..1, as LoadImage reads it (EXIF rotation, RGB). Raises ValueError naming the file when it is missing,
    outside the input folders or unreadable."""
    import os

    import folder_paths
    import numpy as np
    from PIL import Image, ImageOps

    path = folder_paths.get_annotated_filepath(name)
    roots = [os.path.abspath(folder_paths.get_directory_by_type(t)) for t in ("input", "temp", "output")]
    real = os.path.abspath(path)
    if not any(os.path.commonpath([real, root]) == root for root in roots if root):
        raise ValueError(f"{name!r} is outside ComfyUI's input folder")
    if not os.path.isfile(real):
        raise ValueError(f"no image {name!r} in ComfyUI's input folder; upload it first (POST /upload/image)")
    try:
        with Image.open(real) as img:
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    except Exception as e:  # noqa: BLE001 (PIL's many decoder errors)
        raise ValueError(f"{name!r} is not a readable image: {e}") from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0)[None]


def first_image(node: str, name: str, image: torch.Tensor) -> torch.Tensor:
    """The first image of an IMAGE batch ``[B, H, W, C]`` as ``[1, H, W, C]``; a batch of more says so in the log
    (a condition is one image; never a silent choice)."""
    if image.shape[0] > 1:
        logger.warning("%s: input '%s' is a batch of %d images; using the first (a condition is one image: pick one "
                       "with ImageFromBatch to use another)", node, name, image.shape[0])
    return image[:1]


def image_to_video(image: torch.Tensor) -> torch.Tensor:
    """IMAGE frames ``[T, H, W, C]`` in 0..1 -> one video ``[1, 3, T, H, W]`` in [-1, 1]."""
    return to_pixels(image).transpose(0, 1).unsqueeze(0)


def video_to_image(video: torch.Tensor) -> torch.Tensor:
    """Video ``[B, 3, T, H, W]`` in [-1, 1] -> IMAGE ``[B * T, H, W, 3]`` float32 in 0..1 (frames of all videos)."""
    if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
        got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"expected a video [B, 3, T, H, W] in [-1, 1], got {got}; decode latents with the VAE first")
    b, _, t, h, w = video.shape
    frames = video.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, 3)
    return ((frames.float() + 1.0) / 2.0).clamp(0.0, 1.0)


# -------------------------------------------------------------------------------------------------------------------
# Checks: wrong connections -> node errors
# -------------------------------------------------------------------------------------------------------------------


def check_conditions(node: str, model: ChameleonModel, conditions: ChameleonConditions) -> LatentFamily:
    """The conditions were encoded with the VAE family the model takes; returns that family."""
    family = model.config.latent
    if conditions.family is not None and conditions.family != family.name:
        raise node_error(node, "conditions", conditions.family,
                         f"encoded with the {conditions.family} VAE but the model takes {family.name} latents",
                         f"feed ChameleonConditions the {family.name} VAE")
    return family


def check_student(node: str, name: str, model: ChameleonModel) -> None:
    """``model`` is a causal student (a teacher cannot stream)."""
    if model.kind != "student":
        raise node_error(node, name, model.name, "this is the bidirectional teacher, it cannot stream",
                         "load a causal student with ChameleonStudentLoader (or sample the teacher with "
                         "ChameleonTeacherSampler)")


def check_teacher(node: str, name: str, model: ChameleonModel) -> None:
    """``model`` is the bidirectional teacher."""
    if model.kind != "teacher":
        raise node_error(node, name, model.name, "this is a causal student, not the bidirectional teacher",
                         "load the teacher with ChameleonTeacherLoader, or stream the student with "
                         "ChameleonStreamStart")


def check_person_conditions(node: str, model: ChameleonModel, conditions: ChameleonConditions) -> None:
    """The conditions hold a reference and a garment (the teacher and FashionChameleon streams need them)."""
    if not conditions.has_person:
        raise node_error(node, "conditions", "no reference / garment",
                         f"{model.name} takes a person (reference) and a garment in context",
                         "connect ChameleonConditions (reference and garment images), not ChameleonVideoSize")


def check_garment_stream(node: str, stream: ChameleonStream) -> None:
    """The stream has a garment to switch (a FashionChameleon stream, not a public student's text-to-video)."""
    if not stream.state.settings.conditions:
        prof = PROFILES.get(stream.model.profile)
        raise node_error(node, "stream", stream.model.name,
                         f"this stream has no garment: it streams {prof.title if prof else 'a public student'} "
                         "(text-/image-to-video, no reference or garment)",
                         "switch its prompt with ChameleonPromptSwitch, or stream a FashionChameleon student")


def check_student_stream(node: str, stream: ChameleonStream) -> None:
    """``stream`` is a CHAMELEON_STREAM of a causal student."""
    from .types import ChameleonStream

    if not isinstance(stream, ChameleonStream):
        raise node_error(node, "stream", stream, "not a FashionChameleon stream", "connect ChameleonStreamStart")
    if stream.model.kind != "student":
        raise node_error(node, "stream", stream.model.name, "this stream comes from the bidirectional teacher, which "
                         "cannot stream or switch garments", "start the stream from ChameleonStudentLoader's model")


def check_vae(node: str, vae, want: LatentFamily) -> LatentFamily:
    """``vae`` is a Wan VAE of the family ``want`` (the model's); returns it."""
    family = vae_family(node, vae)
    if family.name != want.name:
        raise node_error(node, "vae", family.name, f"the model takes {want.name} latents",
                         f"connect the {want.name} VAE")
    return family


def check_resolution(node: str, family: LatentFamily, width: int, height: int) -> None:
    """Width and height fit the VAE stride and the DiT's 2x2 patches."""
    step = family.spatial_stride * 2
    for name, value in (("width", width), ("height", height)):
        if value % step:
            raise node_error(node, name, value, f"not a multiple of {step} ({family.name} VAE + 2x2 patches)",
                             f"use {round(value / step) * step or step}")


STREAM_INPUTS = ("steps", "chunk_frames", "cache_frames", "sink_chunks")
"""Stream Start's settings inputs; -1 takes the student's profile's value."""
PROFILE_VALUE = -1


def start_node_stream(node: str, student, positive, conditions, *, seed: int, steps: int, chunk_frames: int,
                      cache_frames: int, sink_chunks: int) -> StreamState:
    """Stream Start's work, shared by the nodes that start a stream: the settings (the student's profile, with the
    inputs that are not -1 over it), the prompt features, then ``start_stream`` (which checks inputs for NaN/inf
    and the cache against free memory before allocating); every refusal names the input it is about."""
    prof = PROFILES.get(getattr(student, "profile", "fashionchameleon"), PROFILES["fashionchameleon"])
    values = {"steps": steps, "chunk_frames": chunk_frames, "cache_frames": cache_frames, "sink_chunks": sink_chunks}
    overrides = {k: v for k, v in values.items() if v != PROFILE_VALUE}
    try:  # a cache sized in tokens (Self-Forcing, CausVid) gets its frames at the stream's size, below
        settings = prof.settings_for(1, **overrides)
    except ValueError as e:
        raise rewrap(node, "cache_frames", cache_frames, e, "raise cache_frames or lower sink_chunks (-1: the "
                     f"{prof.name} profile's)") from None
    if getattr(student, "shift", None) is not None:  # a native MODEL patched by ModelSamplingSD3
        try:
            settings = dataclasses.replace(settings, shift=student.shift)
        except ValueError as e:
            raise rewrap(node, "student", f"shift {student.shift}", e,
                         "set ModelSamplingSD3's shift above 0 (the student is distilled at 5)") from None
    family = student.config.latent
    if prof.conditions:
        check_person_conditions(node, student, conditions)
        h, w = conditions.reference.shape[-2:]
    else:
        if conditions.has_person:
            raise node_error(node, "conditions", "reference and garment",
                             f"{student.name} streams with the {prof.name} profile ({prof.title}): text-to-video "
                             "without a person or garment",
                             "connect ChameleonVideoSize (size, and a first frame for image-to-video) instead of "
                             "ChameleonConditions, or load the student with the fashionchameleon profile")
        if conditions.first_frame is not None and not prof.image_to_video:
            raise node_error(node, "conditions", "first frame", f"the {prof.name} profile is text-to-video only",
                             "remove the image from ChameleonVideoSize (longlive2 takes a first frame)")
        check_resolution(node, family, conditions.width, conditions.height)
        h, w = family.latent_size(conditions.height, conditions.width)
    if prof.cache_tokens is not None and "cache_frames" not in overrides:
        frames = prof.settings_for(student.config.tokens_per_latent_grid(h, w), **overrides).cache_frames
        settings = dataclasses.replace(settings, cache_frames=frames)
    context = conditioning_tensor(node, "positive", positive)
    if prof.conditions:
        latents = {"reference": conditions.reference, "garment": conditions.garment}
    else:
        latents = {"latent_size": (h, w), "first_frame": conditions.first_frame}
    try:
        state = start_stream(student.load(), context=context, seed=seed, settings=settings, **latents)
    except MemoryBudgetError as e:
        raise rewrap(node, "cache_frames", cache_frames, e,
                     "lower cache_frames or the resolution, or free device memory") from None
    except ValueError as e:  # prompt features or condition latents that do not fit the model (named in e)
        raise rewrap(node, "positive", "CONDITIONING", e,
                     "use the text encoder, VAE and images that match the student") from None
    return apply_model_weighting(node, student, state)
