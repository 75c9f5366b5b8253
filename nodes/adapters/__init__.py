"""The ComfyUI <-> core layer: every conversion between ComfyUI's objects and the core's, and the checks that turn
wrong connections into node errors. Node files import the module they need from here, and core names from the core.

- :mod:`.models`: the ``diffusion_models`` folder and model management -> a core transformer (the loaders);
- :mod:`.native`: a native ComfyUI MODEL -> the core's view over its modules; ComfyUI's attention for the core;
- :mod:`.model_files`: Wan VAEs of any size, prompt-embedding files, the managed view of a VAE's weights, missing
  model files at validation;
- :mod:`.vae`: a ComfyUI VAE -> latent family, single-image encode, the codec (ComfyUI encode + core streaming decode);
- :mod:`.tiny_decoder`: the ``vae_approx`` folder -> the tiny TAEHV decoder and its chunk previews;
- :mod:`.values`: CONDITIONING, IMAGE, text <-> the core's tensors;
- :mod:`.segments`: stream segments on LATENT sockets, and the video segments behind them;
- :mod:`.stream_start`: Stream Start's inputs -> a core stream;
- :mod:`.stream_options`: the option nodes' inputs -> the core's stream options;
- :mod:`.checks`: wrong connections -> node errors.

ComfyUI modules (``comfy``, ``folder_paths``) are imported inside the functions that use them, so the layer imports
and runs without ComfyUI (the tests load the pack as a package and call it directly).
"""
