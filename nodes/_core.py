"""The pack's core library, whether the pack is loaded by ComfyUI (as a package) or by the tests / scripts."""

from __future__ import annotations

try:  # inside ComfyUI: custom_nodes/<pack>/ is a package and chameleon_core a sibling subpackage
    from ..chameleon_core import images, latents, loading, quant, rescheduling, samplers, streaming, vae
    from ..chameleon_core.config import StreamSettings
except ImportError:  # tests and scripts with the repository root on sys.path
    from chameleon_core import images, latents, loading, quant, rescheduling, samplers, streaming, vae  # type: ignore[no-redef]  # noqa: E501
    from chameleon_core.config import StreamSettings  # type: ignore[no-redef]

__all__ = ["images", "latents", "loading", "quant", "rescheduling", "samplers", "streaming", "vae", "StreamSettings"]
