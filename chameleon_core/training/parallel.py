"""FSDP2 sharding, per-block activation checkpointing, and gathering full weights, for the Wan DiT.

Sharding (``torch.distributed.fsdp.fully_shard``, one process per GPU): full shard of parameters, gradients and
optimiser state; parameters computed in ``param_dtype`` (bf16) with fp32 master weights, gradients reduced in fp32.

Unit layout. :meth:`WanModel.prepare_text` computes every block's cross-attention K/V *before* the blocks run, so
a block's ``cross_attn.k`` / ``cross_attn.v`` are used outside the block's own forward. FSDP units therefore are,
per block, ``self_attn`` (q, k, v, o and norms), ``ffn.0`` and ``ffn.2`` -- ~75% of a block's weights -- and the
root holds the rest (embeddings, head, cross-attention, modulation): ~1.1 B of 5 B weights stay gathered during a
step. Sharding whole blocks would need the cross-attention K/V computed inside ``Block.forward``.

Forwards must enter through ``model(...)`` (``__call__``) so FSDP's hooks gather the root's weights. Anything other
than the plain forward (the teacher-forcing frames forward, a streaming rollout) runs inside the root forward with
:func:`run_inside`. The model's compute dtype (``model.dtype``) is fixed at wrap time, because the weights a
property would read are sharded fp32 outside their unit's forward.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from chameleon_core.attention import SDPA_FP32
from chameleon_core.model import Block, WanModel
from chameleon_core.precision import Precision

logger = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}") from None


class CheckpointedBlock(Block):
    """A :class:`Block` whose activations are recomputed in backward (non-reentrant checkpointing).

    Installed by swapping the instance's class, so parameter names (the checkpoint keys) do not change.
    """

    def forward(self, *args: Any) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(*args)
        return checkpoint(super().forward, *args, use_reentrant=False)


class _Inside:
    """Marks a callable that :class:`TrainableWanModel` runs inside its forward."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn


class TrainableWanModel(WanModel):
    """:class:`WanModel` with a forward that can run any function on itself (its precision policy is set by
    :func:`prepare_model`: FSDP's parameter dtype, or fp32).

    ``model(x, t, context, reference=, garment=)`` is the plain forward; ``run_inside(model, fn, *args)`` calls
    ``fn(model, *args)`` within the root forward, so FSDP gathers the root's weights and reduces their gradients.
    """

    autocast_dtype: torch.dtype | None = None
    """Without FSDP: the dtype every forward runs under ``torch.autocast`` (set by :func:`prepare_model`); None: off."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self._autocast():
            if args and isinstance(args[0], _Inside):
                out = args[0].fn(self, *args[1:], **kwargs)
            else:
                out = super().forward(*args, **kwargs)
        # The prediction is a slice of the head output; FSDP's backward hook must not sit on a view (latent-sized
        # copy, negligible next to activations).
        return out.clone() if isinstance(out, torch.Tensor) and out._base is not None else out

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(next(self.parameters()).device.type, dtype=self.autocast_dtype)


def run_inside(model: nn.Module, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(model, *args, **kwargs)`` run inside ``model``'s forward (FSDP gathers/reduces the root's weights).

    Use it for the teacher-forcing frames forward and for streaming rollouts (:func:`chameleon_core.chunk_step.
    denoise_chunk`), which call :meth:`WanModel.forward_frames` rather than ``model(...)``.
    """
    return model(_Inside(fn), *args, **kwargs)


def prepare_model(
    model: WanModel,
    *,
    device: torch.device,
    fsdp: bool,
    param_dtype: torch.dtype = torch.bfloat16,
    reduce_dtype: torch.dtype = torch.float32,
    activation_checkpointing: bool = True,
    trainable: bool = True,
    broadcast_from_rank0: bool = False,
    offload: bool = False,
    autocast: torch.dtype | None = None,
    compile_blocks: bool = False,
) -> TrainableWanModel:
    """Make ``model`` (fp32 master weights, any device) ready to train: checkpointing, FSDP2, device, mode.

    Without FSDP the model runs in fp32 (or under ``autocast``) on ``device`` (a single process only). With
    ``broadcast_from_rank0`` (FSDP only), rank 0 passes the real weights and the other ranks a model on the meta
    device; after sharding, rank 0's full weights are broadcast into every rank's shards (collective). ``offload``
    (FSDP only; meant for the frozen GR-DMD teacher): the shards live in host memory (pinned on CUDA) and each unit
    is copied to the device for its forward (FSDP2's ``CPUOffloadPolicy``), which frees the teacher's 4
    bytes/parameter/GPU share.
    ``autocast`` (without FSDP only): every forward runs under ``torch.autocast`` in that dtype over the fp32
    weights; on CPU the attention then computes in fp32 (:data:`~chameleon_core.attention.SDPA_FP32`).
    ``compile_blocks`` (without FSDP only): each block's forward is compiled with ``torch.compile`` in place
    (``nn.Module.compile``: the parameters and state-dict keys do not change); on CPU a missing C++ compiler raises
    :class:`MissingCompilerError` here, before any step.
    """
    if autocast is not None and fsdp:
        raise ValueError("autocast is for a model without FSDP; FSDP computes in its param_dtype")
    if compile_blocks and fsdp:
        raise ValueError("compile_blocks is for a model without FSDP (its FSDP units sit inside the blocks)")
    if compile_blocks and device.type == "cpu":
        require_cpp_compiler()
    if not _is_meta(model):
        model = model.float()
    full = model.state_dict() if broadcast_from_rank0 and not _is_meta(model) else None
    model.__class__ = TrainableWanModel
    if activation_checkpointing and trainable:
        for block in model.blocks:
            block.__class__ = CheckpointedBlock
    model.requires_grad_(trainable)
    if offload and not fsdp:
        raise ValueError("offloading a model to host memory needs model.fsdp=true (FSDP2's CPUOffloadPolicy)")
    if fsdp:
        from torch.distributed.fsdp import (
            CPUOffloadPolicy,
            MixedPrecisionPolicy,
            OffloadPolicy,
            fully_shard,
        )

        # The inner units (linear layers, self-attention) return reshaped views; the block only ever combines them
        # out of place (``x = x + gate(y)``), which is what FSDP's warning asks for (tests/test_training.py checks
        # FSDP against the plain module), so the per-call warning is noise.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDP(Linear|SelfAttention)\) returned a view")
        home = torch.device("cpu") if offload else device  # where the shards live
        if not broadcast_from_rank0:
            model.to(home)
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
        policy = CPUOffloadPolicy(pin_memory=device.type == "cuda") if offload else OffloadPolicy()
        for block in model.blocks:
            for unit in (block.self_attn, block.ffn[0], block.ffn[2]):
                fully_shard(unit, mp_policy=mp, offload_policy=policy)
        fully_shard(model, mp_policy=mp, offload_policy=policy)
        model.precision = Precision(param_dtype)  # FSDP gathers the weights in param_dtype for each forward
        if broadcast_from_rank0:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            model.to_empty(device=home)
            set_model_state_dict(model, full if full is not None else {},
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
            model.requires_grad_(trainable)
    else:
        model.to(device)
        model.precision = Precision(torch.float32)
        model.autocast_dtype = autocast
        if autocast is not None and device.type == "cpu":
            model.attention = SDPA_FP32
        if compile_blocks:
            for block in model.blocks:
                block.compile()
    return model.train(trainable)


class MissingCompilerError(ValueError):
    """``torch.compile`` on CPU needs a C++ compiler and none was found."""


def require_cpp_compiler() -> None:
    """Raise :class:`MissingCompilerError` (saying what to do) when torch's CPU compiler backend finds no C++ compiler;
    without this check the first training step would fail deep inside ``torch.compile``."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except (RuntimeError, OSError) as e:  # torch._inductor.exc.InvalidCxxCompiler, or the probe failing to run
        raise MissingCompilerError(
            f"model.compile = true on CPU needs a C++ compiler for torch.compile, and none was found ({e}); install "
            "one (Debian/Ubuntu: apt install g++; macOS: xcode-select --install), point CXX at it, or set "
            "--set model.compile=false") from None


def _is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on CPU: complete on rank 0, empty on the others. Collective: call on all."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class NonFiniteWeightsError(ValueError):
    """Trained weights hold NaN or inf: they are not exported."""


def check_finite_weights(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights holding NaN or inf (naming how many tensors and the first few), before anything is written."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteWeightsError(
            f"the weights to export to {path} hold NaN or inf in {len(bad)} of {len(state)} tensors (first: "
            f"{', '.join(bad[:3])}); nothing was written. Training diverged: resume from an earlier checkpoint with a "
            "lower optim.lr, and check the data (a NaN in a cache item)"
        )


def export_weights(
    model: nn.Module,
    path: str | Path,
    *,
    kind: str,
    is_main: bool,
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> Path | None:
    """Write the model's weights through :func:`chameleon_core.checkpoints.save_transformer` (rank 0 writes).

    The file is in the original Wan layout that the loaders and the ComfyUI nodes read, tagged ``kind``
    (``student`` / ``teacher``). Collective: every rank must call it.
    """
    state = full_state_dict(model)
    if not is_main:
        return None
    check_finite_weights(state, path)
    try:
        from chameleon_core.checkpoints import save_transformer
    except ImportError as e:
        raise RuntimeError(
            f"cannot export weights: chameleon_core.checkpoints.save_transformer is unavailable ({e}); the training "
            "checkpoint in the run folder still holds the weights"
        ) from e
    config = getattr(model, "config", None)
    out = save_transformer(path, state, kind=kind, config=config, metadata=metadata, dtype=dtype)
    logger.info("exported %s weights to %s", kind, out)
    return Path(out)
