"""ComfyUI entry point of the FashionChameleon node pack: hands ComfyUI the node list, nothing else.

The nodes live in ``nodes/`` (the only ComfyUI-facing code); the library in ``chameleon_core`` (pure PyTorch). The
import happens when ComfyUI calls the entry point, so importing this package (pytest does) needs no ComfyUI.
"""

WEB_DIRECTORY = "./web/js"
"""The live node's widget (``web/js/chameleon_live.js``); ComfyUI reads this before calling the entry point."""


async def comfy_entrypoint():
    from .nodes.extension import comfy_entrypoint as entrypoint

    return await entrypoint()
