"""Write transformer and VAE checkpoints in exactly the layouts the loaders read.

- :func:`save_transformer`: one safetensors file in the original Wan names (as ``WanModel.state_dict()``), with the
  metadata the loader reads back: the role (``fashionchameleon.kind``), the prompt length
  (``fashionchameleon.text_len``) and the metadata scheme version. Training exports through it.
- :func:`save_vae`: one safetensors file in the original Wan VAE names.

Both check, before writing a byte, that the reader will rebuild exactly the model given (names, shapes, and the
config inferred from them), and write through :func:`~.tensors.write_safetensors`: one tensor at a time, renamed
into place when complete.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import torch

from ..config import WanConfig
from ..model import WanModel
from ..vae import WanVAE
from .files import SHOW
from .layouts import strip_vae_prefix, unwrap_state_dict_names
from .metadata import FORMAT_VERSION, FORMAT_VERSION_KEY, KIND_METADATA_KEY, KINDS, TEXT_LEN_METADATA_KEY
from .tensors import write_safetensors
from .transformer import COMPUTE_DTYPES, infer_config
from .vae import check_vae_layout, infer_vae_config

logger = logging.getLogger(__name__)


def _target(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if p.suffix.lower() != ".safetensors":
        raise ValueError(
            f"checkpoints are saved as safetensors, but the path {str(p)!r} ends in {p.suffix or 'no suffix'!r}; "
            f"pass a path ending in .safetensors (e.g. {p.with_suffix('.safetensors').name!r})"
        )
    if p.is_dir():
        raise ValueError(f"{p} is a folder; pass the path of the .safetensors file to write")
    return p


def _tensors(obj: object, what: str) -> dict[str, torch.Tensor]:
    """The state dict of a module, or a mapping of tensors, checked to hold tensors only."""
    sd = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
    if not isinstance(sd, Mapping):
        raise TypeError(f"expected {what} (or its state dict), got {type(obj).__name__}")
    bad = [f"{k!r}: {type(v).__name__}" for k, v in sd.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]  # fmt: skip
    if bad:
        raise TypeError(
            f"a state dict to save maps names to tensors; got {len(bad)} other entries: {bad[:SHOW]}. Pass the "
            "model's state_dict() (not a whole training checkpoint with optimizer state or step counters)"
        )
    return dict(sd)


def _metadata(user: Mapping[str, str] | None, ours: dict[str, str]) -> dict[str, str]:
    user = dict(user or {})
    clash = {k: v for k, v in user.items() if k in ours and v != ours[k]}
    if clash:
        raise ValueError(
            f"metadata {clash} contradicts what the saver writes itself {({k: ours[k] for k in clash})}; drop those "
            "entries from metadata= (kind and text_len are set by the kind= argument and the config)"
        )
    return {**user, **ours}


def _model_config(model: object) -> WanConfig | None:
    # torch.compile's wrapper forwards attributes to the model; DDP keeps it in .module.
    for candidate in (model, getattr(model, "module", None)):
        config = getattr(candidate, "config", None)
        if isinstance(config, WanConfig):
            return config
    return None


def save_transformer(
    path: str | os.PathLike[str],
    model_or_state_dict: WanModel | torch.nn.Module | Mapping[str, torch.Tensor],
    *,
    kind: str,
    config: WanConfig | None = None,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Save a Wan DiT as one original-layout ``.safetensors`` file that :func:`~.transformer.load_transformer` and
    :func:`~.kind.checkpoint_kind` read back exactly; returns the path written.

    Args:
        path: the file to write (``.safetensors``); written beside it first and renamed when complete.
        model_or_state_dict: a :class:`WanModel` (possibly wrapped by torch.compile / DDP), or its state dict; the
            name components that FSDP, activation checkpointing, torch.compile and DDP add are stripped.
        kind: ``student`` (the causal few-step model) or ``teacher`` (bidirectional).
        config: the architecture; taken from the model's ``.config`` when not given, required for a state dict.
            Its ``text_len`` is stored in the metadata.
        metadata: extra string metadata to store.
        dtype: cast floating tensors (e.g. ``torch.bfloat16`` for export); default: as they are.
    """
    if kind not in KINDS:
        raise ValueError(
            f"kind must be 'student' (the causal few-step model) or 'teacher' (bidirectional), got {kind!r}; the "
            "loader and the nodes pick the model's role from it"
        )
    target = _target(path)
    config = config if config is not None else _model_config(model_or_state_dict)
    if config is None:
        given = "state dict" if isinstance(model_or_state_dict, Mapping) else type(model_or_state_dict).__name__
        raise ValueError(
            f"config is required to save a {given}: it has no WanModel .config to take the architecture and "
            "text_len from; pass config=model.config (its text_len is stored in the checkpoint)"
        )
    if not isinstance(config, WanConfig):
        raise TypeError(f"config must be a WanConfig, got {type(config).__name__}")
    if dtype is not None and dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"dtype must be None (keep) or one of {[str(d) for d in COMPUTE_DTYPES]}, got {dtype!r}; "
            "use torch.bfloat16 to export at half the size"
        )
    sd = _tensors(model_or_state_dict, "a WanModel")
    names = unwrap_state_dict_names(sd)
    tensors: dict[str, torch.Tensor] = {}
    for stored, name in names.items():
        if name in tensors:
            raise ValueError(f"two tensors of the state dict become {name!r} once wrapper names are stripped; "
                             "pass the state dict of one model")  # fmt: skip
        tensors[name] = sd[stored]
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in WanModel(config).state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"the state dict is not that of a WanModel with the given config (dim={config.dim}, "
            f"{config.num_layers} layers): missing {len(missing)} keys {missing[:SHOW]}, unexpected "
            f"{len(unexpected)} keys {unexpected[:SHOW]}. Pass the generator's state dict (not an adapter or a "
            "wrapper's), and the config it was built from"
        )
    for name, want in expected.items():
        if tuple(tensors[name].shape) != want:
            raise ValueError(
                f"shape mismatch for {name!r}: the config (dim={config.dim}, ffn_dim={config.ffn_dim}) needs "
                f"{list(want)}, the state dict has {list(tensors[name].shape)}; pass the config the model was built "
                "from"
            )
    inferred = infer_config(expected, text_len=config.text_len)
    differ = [
        f"{f.name}={getattr(config, f.name)!r} (reads back as {getattr(inferred, f.name)!r})"
        for f in fields(WanConfig)
        if f.compare and getattr(config, f.name) != getattr(inferred, f.name)
    ]
    if differ:
        raise ValueError(
            f"this config cannot be stored: the loader infers the architecture from the tensor shapes (with "
            f"128-wide heads and default eps / rope_theta), and would read {', '.join(differ)}; train with a config "
            "the loader can infer"
        )
    ours = {
        KIND_METADATA_KEY: kind,
        TEXT_LEN_METADATA_KEY: str(config.text_len),
        FORMAT_VERSION_KEY: str(FORMAT_VERSION),
    }
    write_safetensors(target, tensors, metadata=_metadata(metadata, ours), dtype=dtype)
    logger.info("saved %s transformer (%s, text_len %d) to %s", kind, inferred.name, config.text_len, target)
    return target


def save_vae(
    path: str | os.PathLike[str],
    vae_or_state_dict: WanVAE | torch.nn.Module | Mapping[str, torch.Tensor],
    *,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Save a Wan VAE as one ``.safetensors`` file in the original Wan VAE names, which
    :func:`~.vae.load_vae` reads back exactly; returns the path written.

    ``vae_or_state_dict``: a :class:`~chameleon_core.vae.WanVAE`, its ``.model``, or a state dict (with or without
    one of the prefixes repackaged files use, e.g. ComfyUI's ``first_stage_model.``).
    """
    target = _target(path)
    obj = vae_or_state_dict.model if isinstance(vae_or_state_dict, WanVAE) else vae_or_state_dict
    sd = _tensors(obj, "a WanVAE")
    unwrapped = {name: sd[stored] for stored, name in unwrap_state_dict_names(sd).items()}
    _, names = strip_vae_prefix(unwrapped, "the VAE state dict to save")
    tensors = {k: unwrapped[raw] for k, raw in names.items()}
    shapes = {k: tuple(t.shape) for k, t in tensors.items()}
    config = infer_vae_config(shapes)
    check_vae_layout(config, shapes, "the VAE state dict to save")
    write_safetensors(target, tensors, metadata=_metadata(metadata, {FORMAT_VERSION_KEY: str(FORMAT_VERSION)}))
    logger.info("saved %s VAE %s to %s", config.family, config, target)
    return target


__all__ = ["save_transformer", "save_vae"]
