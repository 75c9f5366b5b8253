"""Checks that need ComfyUI's own objects in this process (run with ComfyUI's interpreter, ``$COMFYUI_DIR`` set).

``python tests/comfyui_inprocess_check.py aliases`` prints the pack's search aliases per node and whether this
ComfyUI's ``io.Schema`` carries them. ``... vae-memory MODELS_DIR VAE_FILE`` loads ``VAE_FILE`` from
``MODELS_DIR/vae`` with the pack's any-size VAE loader, decodes two segments with ChameleonStreamDecode and prints
where the VAE's weights are: whether model management holds the VAE, how many tensors alive anywhere in the process
hold a copy of a VAE weight outside ComfyUI's own parameters, and how far the frames are from the core's direct
decode of the same file. One JSON line each; the integration test asserts on them.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup() -> object:
    comfy_dir = os.path.abspath(os.environ["COMFYUI_DIR"])
    sys.argv = [os.path.join(comfy_dir, "main.py"), "--cpu"]
    sys.path.insert(0, comfy_dir)
    import comfy.options

    comfy.options.enable_args_parsing()
    spec = importlib.util.spec_from_file_location("comfyui_fashionchameleon", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_fashionchameleon"] = pack
    spec.loader.exec_module(pack)
    return pack


def aliases() -> dict:
    import dataclasses

    from comfy_api.latest import io
    from comfyui_fashionchameleon.nodes import decode, loaders, options, stream_nodes, teacher
    from comfyui_fashionchameleon.nodes.conditions import ChameleonConditionsNode, ChameleonVideoSizeNode
    from comfyui_fashionchameleon.nodes.live import ChameleonLiveStream
    from comfyui_fashionchameleon.nodes.sockets import NODE_ALIASES

    classes = [c for m in (decode, loaders, options, stream_nodes, teacher) for c in vars(m).values()
               if isinstance(c, type) and issubclass(c, io.ComfyNode) and c.__module__ == m.__name__]
    for cls in [*classes, ChameleonConditionsNode, ChameleonVideoSizeNode, ChameleonLiveStream]:
        cls.define_schema()
    return {"supported": "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)},
            "aliases": NODE_ALIASES}


def vae_memory(models: str, vae_name: str) -> dict:
    import folder_paths
    import torch

    folder_paths.folder_names_and_paths["vae"] = ([str(Path(models) / "vae")], folder_paths.supported_pt_extensions)
    import comfy.model_management as mm
    from comfyui_fashionchameleon.chameleon_core.checkpoints import load_vae
    from comfyui_fashionchameleon.chameleon_core.decoding import decode_chunks
    from comfyui_fashionchameleon.nodes.adapters.model_files import load_wan_vae
    from comfyui_fashionchameleon.nodes.decode import ChameleonStreamDecode

    vae = load_wan_vae("check", vae_name)
    latents = torch.randn(1, 48, 6, 4, 4, generator=torch.Generator().manual_seed(0))
    out = ChameleonStreamDecode.execute(vae, 3, None, segment_1={"samples": latents[:, :, :3]},
                                        segment_2={"samples": latents[:, :, 3:]})
    frames = out.args[0] if hasattr(out, "args") else out[0]
    core = load_vae(Path(models) / "vae" / vae_name)
    pixels = torch.cat(list(decode_chunks(core, latents, 3)), dim=2)[0]
    expected = ((pixels.permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    del core, pixels
    gc.collect()
    managed = vae.first_stage_model.state_dict(keep_vars=True)
    ptrs = {t.untyped_storage().data_ptr() for t in managed.values() if t.numel()}
    by_shape: dict = {}
    for t in managed.values():
        if t.numel() > 8:
            by_shape.setdefault(tuple(t.shape), []).append(t)
    copies = 0
    for obj in gc.get_objects():
        if not isinstance(obj, torch.Tensor) or obj.is_meta or obj.numel() <= 8:
            continue
        if obj.untyped_storage().data_ptr() in ptrs:
            continue
        if any(obj.dtype == t.dtype and torch.equal(obj, t.data) for t in by_shape.get(tuple(obj.shape), [])):
            copies += 1
    loaded = [lm.model for lm in mm.current_loaded_models]
    return {"managed": any(m is vae.patcher for m in loaded), "copies": copies,
            "weights": len(ptrs), "frames": list(frames.shape),
            "max_diff": float((frames - expected).abs().max())}


def main() -> None:
    setup()
    if ARGS[0] == "aliases":
        print(json.dumps(aliases()))
    elif ARGS[0] == "vae-memory":
        print(json.dumps(vae_memory(ARGS[1], ARGS[2])))
    else:
        raise SystemExit(f"unknown check {ARGS}")


ARGS = sys.argv[1:]

if __name__ == "__main__":
    main()
