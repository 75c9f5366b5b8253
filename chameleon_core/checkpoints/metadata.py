"""The safetensors metadata FashionChameleon writes into its checkpoints, and reading it back.

A checkpoint's tensors fix the architecture but not everything about the model: its role (the causal student or
the bidirectional teacher share one architecture) and the prompt length it pads to are stored as string metadata.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import CheckpointError

KIND_METADATA_KEY = "fashionchameleon.kind"
"""A checkpoint's role: ``student`` (causal, few-step) or ``teacher`` (bidirectional)."""
TEXT_LEN_METADATA_KEY = "fashionchameleon.text_len"
"""The prompt length (tokens) the model zero-pads its text context to."""
FORMAT_VERSION_KEY = "fashionchameleon.format_version"
"""Version of this metadata scheme; a reader refuses versions newer than it knows."""
FORMAT_VERSION = 1
"""The version :mod:`~chameleon_core.checkpoints.save` writes."""
KINDS = ("student", "teacher")
"""The values of :data:`KIND_METADATA_KEY`."""
DEFAULT_TEXT_LEN = 512
"""Prompt length of every released Wan; used when a checkpoint does not store one."""


def _int_field(metadata: Mapping[str, str], key: str, source: str, what: str) -> int | None:
    raw = metadata.get(key)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise CheckpointError(
            f"{source}: metadata {key}={raw!r} is not a positive whole number ({what}); rewrite the file with "
            f"chameleon_core.checkpoints.save_transformer, or remove the entry"
        )
    return value


def check_format_version(metadata: Mapping[str, str], source: str) -> None:
    """Raise for a checkpoint written with a newer metadata scheme than this reader knows."""
    version = _int_field(metadata, FORMAT_VERSION_KEY, source, "the metadata scheme version")
    if version is not None and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source} was written with FashionChameleon checkpoint format {version}, but this version reads formats "
            f"up to {FORMAT_VERSION}; update the FashionChameleon node pack"
        )


def text_len_from_metadata(metadata: Mapping[str, str], source: str) -> int | None:
    """The stored prompt length, or None when the checkpoint does not store one."""
    return _int_field(metadata, TEXT_LEN_METADATA_KEY, source, "the prompt length in tokens")


def kind_from_metadata(metadata: Mapping[str, str], source: str) -> str | None:
    """The stored role (``student`` / ``teacher``), or None when the checkpoint does not store one."""
    kind = metadata.get(KIND_METADATA_KEY)
    if kind is not None and kind not in KINDS:
        raise CheckpointError(
            f"{source}: metadata {KIND_METADATA_KEY}={kind!r} is neither 'student' nor 'teacher'; fix the metadata "
            "when writing the file"
        )
    return kind
