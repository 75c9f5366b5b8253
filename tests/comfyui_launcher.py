"""Start a real ComfyUI (``$COMFYUI_DIR``) whose two fixed-size models are shrunk to the tiny test sizes.

ComfyUI builds umT5-XXL and the Wan2.2 VAE from fixed full-size configs, whatever the checkpoint holds, so tiny
random checkpoints cannot load into them. This launcher applies the sizes in ``$CHAMELEON_TINY_SIZES`` (written by
``python -m chameleon_core.tools.tiny_checkpoints``): the umT5 config goes through ComfyUI's own
``model_options["umt5xxl_model_config"]`` override, the VAE widths through the VAE class's constructor. Nothing else
is touched: server, graph execution, caching, model management, the core nodes and this pack run as shipped.

Usage: ``COMFYUI_DIR=... CHAMELEON_TINY_SIZES=.../tiny_sizes.json python tests/comfyui_launcher.py [main.py args]``

``... comfyui_launcher.py --encode-prompt CLIP_FILE TEXT OUT`` instead encodes TEXT as ComfyUI's
``CLIPLoader`` (type wan) + ``CLIPTextEncode`` do on the CPU, and saves the CONDITIONING tensor to OUT
(safetensors, key ``context``): the prompt features a direct core run needs to reproduce a workflow's frames.
"""

from __future__ import annotations

import json
import os
import runpy
import sys


def tiny_comfyui(argv: list[str]) -> None:
    """Make ``$COMFYUI_DIR`` importable with ``argv`` as its command line, and shrink umT5 and the VAE."""
    comfy_dir = os.path.abspath(os.environ["COMFYUI_DIR"])
    with open(os.environ["CHAMELEON_TINY_SIZES"]) as f:
        sizes = json.load(f)
    sys.argv = [os.path.join(comfy_dir, "main.py")] + argv
    sys.path.insert(0, comfy_dir)
    os.chdir(comfy_dir)

    import comfy.options

    comfy.options.enable_args_parsing()  # as main.py does first, so --cpu etc. apply to what we import here
    import comfy.ldm.wan.vae2_2 as vae22
    import comfy.sd

    load_te = comfy.sd.load_text_encoder_state_dicts

    def tiny_text_encoder(state_dicts=[], embedding_directory=None, clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION,  # noqa: B006
                          model_options={}):  # noqa: B006  (ComfyUI's own signature)
        options = {**model_options, "umt5xxl_model_config": sizes["umt5xxl_model_config"]}
        return load_te(state_dicts, embedding_directory, clip_type, options)

    comfy.sd.load_text_encoder_state_dicts = tiny_text_encoder

    vae_init = vae22.WanVAE.__init__

    def tiny_vae(self, *args, **kwargs):
        kwargs.update(sizes["wan22_vae"])
        vae_init(self, *args, **kwargs)

    vae22.WanVAE.__init__ = tiny_vae

    if "wan21_vae" in sizes:  # the Wan2.1 students' VAE (tiny_checkpoints --profiles)
        import comfy.ldm.wan.vae as vae21

        vae21_init = vae21.WanVAE.__init__

        def tiny_vae21(self, *args, **kwargs):
            kwargs.update(sizes["wan21_vae"])
            vae21_init(self, *args, **kwargs)

        vae21.WanVAE.__init__ = tiny_vae21


def encode_prompt(clip_file: str, text: str, out: str) -> None:
    """TEXT -> CONDITIONING tensor ``[1, L, 4096]`` as CLIPLoader(type wan, device default) + CLIPTextEncode."""
    clip_file, out = os.path.abspath(clip_file), os.path.abspath(out)
    tiny_comfyui(["--cpu"])
    import comfy.sd
    from safetensors.torch import save_file

    clip = comfy.sd.load_clip(ckpt_paths=[clip_file], clip_type=comfy.sd.CLIPType.WAN)
    conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(text))
    save_file({"context": conditioning[0][0].contiguous()}, out)


def main() -> None:
    if sys.argv[1:2] == ["--encode-prompt"]:
        encode_prompt(*sys.argv[2:5])
        return
    tiny_comfyui(sys.argv[1:])
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
