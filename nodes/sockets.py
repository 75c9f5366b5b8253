"""The pack's custom socket types, declared once, and the search terms every node of the pack is found by.

Sockets carry the typed objects of :mod:`.types`: CHAMELEON_MODEL a ``ChameleonModel``, CHAMELEON_CONDITIONS a
``ChameleonConditions``, CHAMELEON_STREAM a ``ChameleonStream``, CHAMELEON_PREVIEW_DECODER a
``ChameleonPreviewDecoder``. The only module of the pack's types that imports ``comfy_api``.
"""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

SEARCH_ALIASES = ("try-on", "virtual try-on", "VTON", "outfit", "garment", "clothes", "fashion", "streaming",
                  "realtime", "real-time video")
"""Search terms every node of the pack is found by (besides its name), as users search for try-on packs."""


def with_aliases(aliases: tuple[str, ...] = (), **schema) -> dict:
    """``io.Schema`` keyword arguments plus ``search_aliases`` (the pack's terms and ``aliases``) where this ComfyUI's
    schema has the field (ComfyUI >= 0.10: shown in ``/object_info``, searched by the node library); every node's
    terms are also kept in :data:`NODE_ALIASES`."""
    terms = list(dict.fromkeys((*SEARCH_ALIASES, *aliases)))
    NODE_ALIASES[schema["node_id"]] = terms
    if "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}:
        schema["search_aliases"] = terms
    return schema


NODE_ALIASES: dict[str, list[str]] = {}
"""node id -> its search aliases (filled as schemas are defined)."""

ModelSocket = io.Custom("CHAMELEON_MODEL")
ConditionsSocket = io.Custom("CHAMELEON_CONDITIONS")
StreamSocket = io.Custom("CHAMELEON_STREAM")
PreviewDecoderSocket = io.Custom("CHAMELEON_PREVIEW_DECODER")
