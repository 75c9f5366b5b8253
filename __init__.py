"""ComfyUI entry point for the FashionChameleon node pack.

ComfyUI imports this file; it only hands over the node list. The nodes arrive with the node-pack issue; until then
the pack registers no nodes. The library itself lives in ``chameleon_core`` and never imports ComfyUI.
"""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
