"""A native ComfyUI MODEL as the pack's model (the core's ModuleView over its modules), ComfyUI's precision rule
(:func:`comfy_precision`) and ComfyUI's attention as a core attention backend (:data:`COMFY_ATTENTION`), both given
to the models the nodes hand the core."""

from __future__ import annotations

import logging
import torch

from ...chameleon_core.attention import AttentionBackend
from ...chameleon_core.module_view import ModuleView, config_of
from ...chameleon_core.precision import Precision
from ...chameleon_core.profiles import PROFILES
from ..errors import node_error
from ..types import ChameleonModel

logger = logging.getLogger(__name__)


MODEL_KINDS = ["student", "teacher"]


def _param_cast(p: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A raw parameter (``modulation``) to the compute device, as ComfyUI's own Wan code casts it (a partially
    loaded model keeps it on the offload device; a LoRA patch has already been applied to it by the patcher)."""
    import comfy.model_management as mm

    return mm.cast_to(p, dtype=dtype, device=device)


def comfy_precision(compute: torch.dtype, **changes) -> Precision:
    """The precision policy of a model inside ComfyUI: compute in ``compute`` (the dtype model management chose),
    ComfyUI's cast rule for its own layers (:func:`comfy_layer_casts`), the rest as the core's (fp32 layers, fp8
    matmul mode given in ``changes``). The native-MODEL view and the pack's loaders both take it."""
    return Precision(compute, layer_casts=comfy_layer_casts, **changes)


def comfy_layer_casts(module) -> bool:
    """Whether a ComfyUI layer casts its weights to the input's dtype on this call (``comfy.ops`` cast layers, and
    any layer a partially loaded model offloads: model management switches ``comfy_cast_weights`` on for those); a
    plain ComfyUI layer of a fully loaded model runs in its own weight dtype."""
    return bool(getattr(module, "comfy_cast_weights", False))


def native_model(node: str, model, kind: str, profile: str = "fashionchameleon") -> ChameleonModel:
    """A ComfyUI MODEL (``UNETLoader`` and anything that patched it: LoRA, ``ModelSamplingSD3``, GGUF loaders) as a
    ``kind`` model of the pack: the core runs on the MODEL's own modules (:class:`ModuleView`), so its weight casting,
    quantised ops, patches and partial loading apply; its ModelPatcher stays the one model management loads."""
    if kind not in MODEL_KINDS:
        raise node_error(node, "kind", kind, "unknown model kind", f"choose one of {MODEL_KINDS}")
    if profile not in PROFILES:
        raise node_error(node, "profile", profile, "unknown stream profile", f"choose one of {list(PROFILES)}")
    base = getattr(model, "model", None)
    source = getattr(base, "diffusion_model", None)
    if source is None or not hasattr(model, "load_device"):
        raise node_error(node, "model", type(model).__name__, "not a ComfyUI MODEL",
                         "connect the MODEL output of UNETLoader (Load Diffusion Model) or of a node that patches it")
    try:
        config = config_of(source)
    except ValueError as e:
        raise node_error(node, "model", type(source).__name__, str(e),
                         "load a FashionChameleon Wan2.2 (or Wan2.1) transformer with UNETLoader") from None
    compute = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    sampling = getattr(model, "object_patches", {}).get("model_sampling")
    shift = float(sampling.shift) if sampling is not None and hasattr(sampling, "shift") else None
    view = ModuleView(source, precision=comfy_precision(compute), device=model.load_device, cast=_param_cast,
                      config=config)
    view.attention = COMFY_ATTENTION
    logger.info("%s: native MODEL as %s (%s, compute %s, shift %s)", node, kind, config, compute, shift)
    return ChameleonModel(patcher=model, kind=kind, name=f"native {type(source).__name__}", view=view, shift=shift,
                          profile=profile)


def comfy_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The core's attention (``[B, L, H, D]``, unmasked) through ComfyUI's ``optimized_attention``: the backend
    ComfyUI chose from its flags (``--use-sage-attention``, ``--use-flash-attention``,
    ``--use-pytorch-cross-attention``, ...), looked up per call."""
    from comfy.ldm.modules import attention as comfy_attn

    out = comfy_attn.optimized_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), heads=q.shape[2],
                                         skip_reshape=True, skip_output_reshape=True)
    return out.transpose(1, 2)


COMFY_ATTENTION = AttentionBackend(comfy_attention, takes_mask=False, name="comfyui optimized_attention")
"""ComfyUI's attention as a core backend, for the models the pack's nodes hand the core (masked calls -- the
teacher's training-style masks, LongLive 1.0's window re-cache -- keep the core's SDPA path, since ComfyUI's kernels
differ in which masks they take). Set per model: nothing in the process is swapped."""
