"""ComfyUI entry point of the FashionChameleon node pack: hands ComfyUI the node list, nothing else.

The nodes live in ``nodes/`` (the only ComfyUI-facing code); the library in ``chameleon_core`` (pure PyTorch). The
import happens when ComfyUI calls the entry point, so importing this package (pytest does) needs no ComfyUI.
"""


async def comfy_entrypoint():
    from .nodes.extension import comfy_entrypoint as entrypoint

    return await entrypoint()
