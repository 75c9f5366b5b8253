"""ComfyUI model folders -> objects under ComfyUI's model management, for the parts of the adapter layer that read
files: Wan VAEs of any size, prompt-embedding files, the streaming view of a loaded VAE, and the check that a
workflow's model files exist (run at validation, so one error lists every missing file).

ComfyUI modules are imported inside the functions (as everywhere in the adapters), so the module imports without
ComfyUI.

Why a pack VAE loader: ComfyUI builds the Wan2.1 / Wan2.2 VAE at its fixed released widths whatever the file holds,
so a small Wan VAE (the demo's, or one a user trains with ``chameleon_core.checkpoints.save_vae``) fails in the core
``VAELoader`` with a size mismatch. :func:`load_wan_vae` builds *ComfyUI's own* VAE class at the widths the file
holds (the core's :func:`infer_vae_config` reads them from the tensor shapes) and loads it through ``comfy.sd.VAE``:
the result is a ComfyUI VAE in every respect (VAEDecode / VAEEncode take it, its ``patcher`` is under model
management). Why a prompt-embedding loader: ComfyUI builds umT5-XXL at full size too (~11 GB in bf16); a file of
precomputed features (``chameleon_core.text.save_prompt_embeddings``) becomes a CONDITIONING with no text encoder.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping

import torch

from ...chameleon_core.checkpoints import CheckpointError
from ...chameleon_core.checkpoints.vae import infer_vae_config, vae_from_state_dict
from ...chameleon_core.text import load_prompt_embeddings, prompt_of
from ...chameleon_core.vae import VAEConfig, WanVAE
from ..errors import node_error

logger = logging.getLogger(__name__)

PROMPT_FOLDER = "prompt_embeddings"
"""The models subfolder (and ComfyUI folder name) holding prompt-embedding ``.safetensors`` files."""


# -------------------------------------------------------------------------------------------------------------------
# Wan VAE of any size -> ComfyUI VAE
# -------------------------------------------------------------------------------------------------------------------


def vae_names() -> list[str]:
    """File names in ComfyUI's ``vae`` folders (the any-size VAE loader's combo)."""
    import folder_paths

    return folder_paths.get_filename_list("vae")


def _comfy_kwargs(config: VAEConfig) -> dict:
    """The constructor arguments of ComfyUI's Wan VAE class for ``config``."""
    kwargs = {"dim": config.dim, "z_dim": config.z_dim, "dim_mult": list(config.dim_mult),
              "num_res_blocks": config.num_res_blocks, "temperal_downsample": list(config.temporal_downsample)}
    if config.family == "wan2.2":
        kwargs["dec_dim"] = config.decoder_dim
    return kwargs


@contextlib.contextmanager
def _wan_vae_at(config: VAEConfig) -> Iterator[None]:
    """While inside, ComfyUI's Wan VAE class of ``config.family`` is built at ``config``'s widths (ComfyUI passes
    its released sizes; ours win). ComfyUI runs nodes on one thread, and the class is restored on exit."""
    import comfy.ldm.wan.vae as wan21
    import comfy.ldm.wan.vae2_2 as wan22

    module = wan22 if config.family == "wan2.2" else wan21
    original, sizes = module.WanVAE, _comfy_kwargs(config)

    class SizedWanVAE(original):
        def __init__(self, *args, **kwargs):
            super().__init__(**{**kwargs, **sizes})

    module.WanVAE = SizedWanVAE
    try:
        yield
    finally:
        module.WanVAE = original


def load_wan_vae(node: str, vae_name: str):
    """``vae_name`` from the ``vae`` folders as a ComfyUI VAE built at the widths the file holds (any Wan2.1 / Wan2.2
    VAE, released or small), or a node error naming the file and the fix."""
    import comfy.sd
    import comfy.utils
    import folder_paths

    path = folder_paths.get_full_path("vae", vae_name)
    if path is None:
        raise node_error(node, "vae_name", vae_name,
                         f"no such file in the vae folders {folder_paths.get_folder_paths('vae')}",
                         "put the VAE into ComfyUI/models/vae (the demo's ships in the pack's demo/models/vae) and "
                         "queue the workflow again")
    try:
        sd, metadata = comfy.utils.load_torch_file(path, return_metadata=True)
        config = infer_vae_config({k: tuple(v.shape) for k, v in sd.items()})
    except Exception as e:  # noqa: BLE001 (the readers' own error types on a damaged file; the core's on another model)
        raise node_error(node, "vae_name", vae_name, f"not a readable Wan VAE: {str(e) or type(e).__name__}",
                         "pick a Wan2.1 / Wan2.2 VAE file (or re-download this one)") from None
    with _wan_vae_at(config):
        vae = comfy.sd.VAE(sd=sd, metadata=metadata)
    got = {k: tuple(v.shape) for k, v in vae.get_sd().items()}
    wrong = sorted(k for k, v in sd.items() if got.get(k) != tuple(v.shape))
    if wrong or len(got) != len(sd):
        raise node_error(node, "vae_name", vae_name,
                         f"the file's tensors do not fit a Wan VAE of {config} (first mismatches: {wrong[:3]})",
                         "pick a Wan VAE saved in the original Wan names (chameleon_core.checkpoints.save_vae "
                         "writes them)")
    logger.info("%s: %s loaded as a ComfyUI %s VAE at %s (%s on %s)", node, vae_name, config.family, config,
                vae.vae_dtype, vae.device)
    return vae


# -------------------------------------------------------------------------------------------------------------------
# The streaming view of a ComfyUI VAE: the core decoder over the very parameters ComfyUI manages
# -------------------------------------------------------------------------------------------------------------------


def _managed(vae) -> dict[str, torch.Tensor]:
    """The live parameters and buffers of ``vae.first_stage_model`` (the objects, not copies)."""
    return vae.first_stage_model.state_dict(keep_vars=True)


def load_for_decode(vae, latent_shape: tuple[int, ...]) -> None:
    """Load ``vae`` on its device through ComfyUI's model management, with room for decoding ``latent_shape``
    (whole: the core modules do not cast weights per layer the way ComfyUI's partially loaded ones do). A VAE-like
    object with no ``patcher`` is not under model management: nothing to load."""
    if getattr(vae, "patcher", None) is None:
        return
    import comfy.model_management as mm

    memory = vae.memory_used_decode(latent_shape, vae.vae_dtype)
    mm.load_models_gpu([vae.patcher], memory_required=memory, force_full_load=True)


def managed_view(vae, cached: WanVAE | None = None) -> WanVAE:
    """A core :class:`WanVAE` whose modules hold the *same parameter objects* as ComfyUI's VAE (no copy: where
    ComfyUI moves or frees the weights, the view follows). ``cached`` is returned while it still shares them."""
    live = _managed(vae)
    if cached is not None:
        mine = cached.model.state_dict(keep_vars=True)
        if len(mine) == len(live) and all(mine.get(k) is v for k, v in live.items()):
            return cached
    return vae_from_state_dict(live)


# -------------------------------------------------------------------------------------------------------------------
# Prompt-embedding files -> CONDITIONING
# -------------------------------------------------------------------------------------------------------------------


def _prompt_folders() -> list[str]:
    """The ``prompt_embeddings`` folders, registered with ComfyUI on first use (``models/prompt_embeddings``)."""
    import folder_paths

    if PROMPT_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(PROMPT_FOLDER, os.path.join(folder_paths.models_dir, PROMPT_FOLDER))
        folder_paths.folder_names_and_paths[PROMPT_FOLDER] = (folder_paths.get_folder_paths(PROMPT_FOLDER),
                                                              {".safetensors"})
    return folder_paths.get_folder_paths(PROMPT_FOLDER)


def prompt_embedding_names() -> list[str]:
    """The prompt-embedding files in ``models/prompt_embeddings`` (the prompt loader's combo)."""
    import folder_paths

    _prompt_folders()
    return folder_paths.get_filename_list(PROMPT_FOLDER)


def load_prompt_conditioning(node: str, name: str) -> tuple[list, str]:
    """A prompt-embedding file as a CONDITIONING ``[[features [1, L, D], {}]]`` and the prompt it encodes."""
    import folder_paths

    folders = _prompt_folders()
    path = folder_paths.get_full_path(PROMPT_FOLDER, name)
    if path is None:
        raise node_error(node, "embeddings_name", name, f"no such file in the prompt_embeddings folders {folders}",
                         "put it into ComfyUI/models/prompt_embeddings (python -m chameleon_core.tools.prompt_embeds "
                         "writes one) and queue the workflow again")
    try:
        features = load_prompt_embeddings(path)
    except CheckpointError as e:
        raise node_error(node, "embeddings_name", name, str(e), "pick a prompt-embedding file") from None
    return [[features.float(), {}]], prompt_of(path) or ""


# -------------------------------------------------------------------------------------------------------------------
# Validation: every model file a node names exists
# -------------------------------------------------------------------------------------------------------------------


def missing_file(folder: str, name: object) -> str | None:
    """None when ``name`` is a file in ComfyUI's ``folder`` folders, else the message validation shows."""
    import folder_paths

    if folder == PROMPT_FOLDER:
        _prompt_folders()
    if isinstance(name, str) and (folder_paths.get_full_path(folder, name) is not None
                                  or name in folder_paths.get_filename_list(folder)):
        return None  # there (a listed entry that is no regular file is the loader's to explain, naming the file)
    return (f"missing model file {name!r}: put it into ComfyUI/models/{folder} (the workflow's Note says where to get "
            f"it) and queue the workflow again")


def missing_files(files: Mapping[str, tuple[str, object]]) -> bool | str:
    """``validate_inputs``' answer for ``{input: (folder, value)}``: True, or one text naming every missing file."""
    problems = [msg for folder, value in files.values() if (msg := missing_file(folder, value))]  # ComfyUI names inputs
    return True if not problems else "; ".join(problems)
