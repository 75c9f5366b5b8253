"""ComfyUI-facing nodes (V3 schema). The only package that imports comfy / comfy_api / folder_paths."""
