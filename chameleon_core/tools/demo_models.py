"""The demo's model files: a stream with no downloads, in a plain ComfyUI and from the command line.

The pack ships these files in its own ``demo/`` folder (``demo/models/...``, ``demo/input/...``), and ComfyUI finds
them with no command (``nodes/demo_files.py`` registers the folders when the pack loads). This tool writes them
elsewhere: ``python -m chameleon_core.tools.demo_models --comfyui /path/to/ComfyUI`` (run from the pack folder)
copies the shipped files into that ComfyUI's folders (``--models DIR`` / ``--input DIR`` to choose them yourself),
and ``--random`` writes fresh random ones:

- ``models/diffusion_models/fashionchameleon_demo_student.safetensors``: a causal student (kind ``student``) in the
  pack's own layout (``checkpoints.save_transformer``);
- ``models/vae/fashionchameleon_demo_vae.safetensors``: a Wan2.2-architecture VAE (48 channels, 4x16x16 strides)
  (``checkpoints.save_vae``), loaded by the pack's *FashionChameleon VAE Loader (any size)*;
- ``models/prompt_embeddings/fashionchameleon_demo_prompt.safetensors``: prompt features
  (``text.save_prompt_embeddings``), loaded by *FashionChameleon Prompt Embeddings* (no umT5-XXL);
- ``input/fashionchameleon_demo_person.png`` and ``..._garment1/2/3.png``: a person and three garments.

The shipped files are trained on the pack's synthetic fashion world (``python -m chameleon_core.training.world
export`` writes them from a run): the garment visibly switches (docs/experiments/world.md). ``--random`` writes
seeded random files of the same kinds (2 blocks of width 256, a width-8 VAE, prompt features ``[1, 16, 64]``) whose
frames are noise: they show the pipeline run in well under a minute on a CPU, for tests. ``--student``, ``--vae``
and ``--prompt`` install other trained files under the demo's names.

The demo templates' size, frame counts and switch frames are the constants below (:data:`DEMO_WIDTH` ...):
``python -m chameleon_core.tools.workflows`` builds the templates from them, so changing them here and
regenerating updates every demo template.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch

from ..checkpoints import save_transformer, save_vae
from ..config import StreamSettings, preset
from ..random_models import random_transformer
from ..text import save_prompt_embeddings
from ..vae import build_vae, vae_preset
from .tiny_checkpoints import write_images

logger = logging.getLogger(__name__)

STUDENT = "fashionchameleon_demo_student.safetensors"
VAE = "fashionchameleon_demo_vae.safetensors"
PROMPT = "fashionchameleon_demo_prompt.safetensors"
IMAGES = ("fashionchameleon_demo_person.png", "fashionchameleon_demo_garment1.png",
          "fashionchameleon_demo_garment2.png", "fashionchameleon_demo_garment3.png")
FILES = {"student": f"diffusion_models/{STUDENT}", "vae": f"vae/{VAE}", "prompt": f"prompt_embeddings/{PROMPT}"}
"""Where each file goes under the models folder (the folders the demo template's loaders read)."""
DEMO_PROMPT = "a person stands in a studio and turns slowly, the garment moving naturally"

PACK_DEMO = Path(__file__).resolve().parents[2] / "demo"
"""The pack's shipped demo files: ``demo/models/<FILES>`` and ``demo/input/<IMAGES>``."""

DEMO_WIDTH = 64
DEMO_HEIGHT = 64
"""The demo templates' video size (multiples of 32)."""
DEMO_CHUNK_FRAMES = 3
"""Latent frames per chunk in the demo templates (the student's training chunk)."""
DEMO_CACHE_FRAMES = 11
"""Latent frames the demo templates' stream caches: the world student's training geometry (2 condition frames and a
9-latent-frame clip), the cache its switches were measured with (docs/experiments/world.md)."""
DEMO_SETTINGS = StreamSettings(chunk_frames=DEMO_CHUNK_FRAMES, cache_frames=DEMO_CACHE_FRAMES)
"""The demo templates' stream settings: FashionChameleon's defaults with the demo student's chunk and cache."""
DEMO_FRAMES = 69
"""Video frames of the ``demo`` template (six chunks)."""
DEMO_CHAIN_FRAMES = 61
"""Video frames of ``demo_switch_chain`` (six chunks: each garment switch starts a new clip, whose first latent frame
is not shown, so the chunks after a switch show four frames fewer; :mod:`chameleon_core.frames`)."""
DEMO_SWITCH_FRAMES = (21, 41)
"""Video frames at which ``demo_switch_chain`` switches to garment 2, then garment 3 (one garment image per switch:
at most three switches with the shipped images)."""
DEMO_LIVE_FRAMES = 477
"""The live demo's frame limit (``demo_live``): about 20 s at 24 fps, time to switch garments from the widget."""


def write_demo(models: str | Path, input_dir: str | Path, *, seed: int = 0, student: str | Path | None = None,
               vae: str | Path | None = None, prompt: str | Path | None = None) -> dict[str, Path]:
    """Write the demo files (random, seeded; or copies of the given trained files) and return their paths."""
    models, input_dir = Path(models), Path(input_dir)
    out = {k: models / v for k, v in FILES.items()}
    for p in out.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    config = preset("tiny")
    if student is None:
        save_transformer(out["student"], random_transformer(config, seed=seed), kind="student",
                         metadata={"fashionchameleon.demo": "random weights"})
    else:
        shutil.copyfile(student, out["student"])
    if vae is None:
        save_vae(out["vae"], build_vae(vae_preset("wan2.2-tiny"), seed=seed),
                 metadata={"fashionchameleon.demo": "random weights"})
    else:
        shutil.copyfile(vae, out["vae"])
    if prompt is None:
        g = torch.Generator().manual_seed(seed)
        save_prompt_embeddings(out["prompt"], torch.randn(1, config.text_len, config.text_dim, generator=g),
                               DEMO_PROMPT)
    else:
        shutil.copyfile(prompt, out["prompt"])
    write_images(input_dir, size=128)
    for src, name in zip(("reference.png", "garment1.png", "garment2.png", "garment3.png"), IMAGES):
        (input_dir / src).replace(input_dir / name)
        out[name] = input_dir / name
    return out


def weights_note(demo: Path = PACK_DEMO) -> str:
    """What the shipped demo weights are, for the demo templates' Notes: random when the student's safetensors
    metadata ``fashionchameleon.demo`` says so (what :func:`write_demo` writes), trained otherwise."""
    from safetensors import safe_open

    path = demo / "models" / FILES["student"]
    try:
        with safe_open(str(path), "pt") as f:
            note = (f.metadata() or {}).get("fashionchameleon.demo", "")
    except (OSError, ValueError, RuntimeError):
        note = "random weights"
    if "random" in note:
        return ("The shipped demo weights are random (seeded), so the frames are noise: they show the pipeline run "
                "(stream, switches, decode, video file), not a try-on.")
    return ("The shipped demo weights are small models trained on the pack's synthetic fashion world: the garment "
            "visibly switches.")


def shipped_files() -> dict[str, Path]:
    """The pack's shipped demo files (``demo/``), by the keys of :func:`write_demo`'s answer."""
    out = {k: PACK_DEMO / "models" / v for k, v in FILES.items()}
    out.update({name: PACK_DEMO / "input" / name for name in IMAGES})
    return out


def copy_shipped(models: str | Path, input_dir: str | Path) -> dict[str, Path]:
    """Copy the pack's shipped demo files into a models and an input folder; returns the written paths."""
    models, input_dir = Path(models), Path(input_dir)
    shipped = shipped_files()
    missing = [str(p) for p in shipped.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the pack's demo files are missing: {missing}; restore them with git checkout demo/, "
                                "or write random ones with --random")
    out = {}
    for key, src in shipped.items():
        dst = (models / FILES[key]) if key in FILES else input_dir / key
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not (dst.exists() and dst.samefile(src)):
            shutil.copyfile(src, dst)
        out[key] = dst
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chameleon_core.tools.demo_models", description=__doc__.split("\n")[0])
    p.add_argument("--comfyui", help="a ComfyUI folder: writes into its models/ and input/")
    p.add_argument("--models", help="a ComfyUI models folder (instead of --comfyui)")
    p.add_argument("--input", help="a ComfyUI input folder (instead of --comfyui)")
    p.add_argument("--random", action="store_true",
                   help="write fresh random (seeded) files instead of copying the pack's shipped demo/ files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--student", help="a trained student .safetensors to install instead of the random one")
    p.add_argument("--vae", help="a trained (any-size) Wan VAE .safetensors to install instead of the random one")
    p.add_argument("--prompt", help="a prompt-embedding .safetensors to install instead of the random one")
    args = p.parse_args(argv)
    if not args.comfyui and not (args.models and args.input):
        p.error("give --comfyui /path/to/ComfyUI, or both --models and --input")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models = Path(args.models) if args.models else Path(args.comfyui) / "models"
    input_dir = Path(args.input) if args.input else Path(args.comfyui) / "input"
    into_pack = models.resolve() == (PACK_DEMO / "models").resolve()
    shipped = all(path.is_file() for path in shipped_files().values())
    if args.random or args.student or args.vae or args.prompt or into_pack or not shipped:
        written = write_demo(models, input_dir, seed=args.seed, student=args.student, vae=args.vae,
                             prompt=args.prompt)
    else:
        written = copy_shipped(models, input_dir)
    for name, path in written.items():
        logger.info("%s: %s", name, path)
    logger.info("Open the 'demo_live' template (Templates in the left sidebar > Custom Nodes > "
                "comfyui-fashionchameleon) and Run.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
