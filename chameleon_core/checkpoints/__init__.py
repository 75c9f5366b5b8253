"""Checkpoint reading and writing, in one place: the save side writes what the read side reads.

Modules, by responsibility:

- :mod:`.errors`: :class:`CheckpointError`, the one error type of every load path (a ValueError), and the
  regular-file check that runs before any file is opened;
- :mod:`.files`: finding the files (single file, sharded index json, a model folder; VAE file names);
- :mod:`.tensors`: one tensor-source abstraction for safetensors (positioned reads), weights-only torch ``.pt`` and
  in-memory state dicts, and the streaming safetensors writer;
- :mod:`.layouts`: layout detection and renaming (Wan, ComfyUI prefix and scaled fp8, diffusers, training
  wrappers; VAE prefixes);
- :mod:`.metadata`: the ``fashionchameleon.*`` metadata (role, prompt length, format version);
- :mod:`.transformer`: config inference from shapes, :func:`inspect_checkpoint`, :func:`load_transformer`;
- :mod:`.vae`: VAE config inference, :func:`load_vae`, :func:`vae_from_state_dict`;
- :mod:`.kind`: :func:`checkpoint_kind` (student or teacher);
- :mod:`.lora`: LoRA adapters (LongLive's ``lora.pt``), merged into the transformer as it loads;
- :mod:`.save`: :func:`save_transformer`, :func:`save_vae`.

Nothing here imports ComfyUI, and nothing is ever unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

from .errors import CheckpointError, CheckpointNotFoundError, check_regular_file
from .files import resolve_checkpoint_files, resolve_vae_file
from .kind import STUDENT_NAME_HINTS, checkpoint_kind
from .lora import LORA_ENTRY, LoRA, read_lora
from .layouts import (
    COMFY_PREFIX,
    DIFFUSERS_TO_WAN,
    DIFFUSERS_TO_WAN_BLOCK,
    LAYOUTS,
    SCALED_FP8_MARKER,
    TRAINING_KEYS,
    VAE_PREFIXES,
    detect_layout,
)
from .metadata import (
    DEFAULT_TEXT_LEN,
    FORMAT_VERSION,
    FORMAT_VERSION_KEY,
    KIND_METADATA_KEY,
    KINDS,
    TEXT_LEN_METADATA_KEY,
)
from .save import save_transformer, save_vae
from .transformer import (
    COMPUTE_DTYPES,
    CheckpointInfo,
    infer_config,
    inspect_checkpoint,
    iter_checkpoint_tensors,
    load_transformer,
    read_state_dict_shapes,
)
from .vae import infer_vae_config, load_vae, vae_from_state_dict

__all__ = [
    "COMFY_PREFIX",
    "COMPUTE_DTYPES",
    "DEFAULT_TEXT_LEN",
    "DIFFUSERS_TO_WAN",
    "DIFFUSERS_TO_WAN_BLOCK",
    "FORMAT_VERSION",
    "FORMAT_VERSION_KEY",
    "KINDS",
    "KIND_METADATA_KEY",
    "LORA_ENTRY",
    "LoRA",
    "LAYOUTS",
    "SCALED_FP8_MARKER",
    "STUDENT_NAME_HINTS",
    "TEXT_LEN_METADATA_KEY",
    "TRAINING_KEYS",
    "VAE_PREFIXES",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "check_regular_file",
    "checkpoint_kind",
    "detect_layout",
    "infer_config",
    "infer_vae_config",
    "inspect_checkpoint",
    "iter_checkpoint_tensors",
    "load_transformer",
    "load_vae",
    "read_lora",
    "read_state_dict_shapes",
    "resolve_checkpoint_files",
    "resolve_vae_file",
    "save_transformer",
    "save_vae",
    "vae_from_state_dict",
]
