"""The demo's model files: a stream with no downloads, in a plain ComfyUI and from the command line.

``python -m chameleon_core.tools.demo_models --comfyui /path/to/ComfyUI`` writes, into that ComfyUI's folders
(``--models DIR`` / ``--input DIR`` to choose them yourself):

- ``models/diffusion_models/fashionchameleon_demo_student.safetensors``: a causal student (kind ``student``) in the
  pack's own layout (``checkpoints.save_transformer``), 2 blocks of width 256, Wan2.2 latents, text width 64;
- ``models/vae/fashionchameleon_demo_vae.safetensors``: a Wan2.2-architecture VAE (48 channels, 4x16x16 strides)
  of width 8 (``checkpoints.save_vae``), loaded by the pack's *FashionChameleon VAE Loader (any size)*;
- ``models/prompt_embeddings/fashionchameleon_demo_prompt.safetensors``: prompt features ``[1, 16, 64]``
  (``text.save_prompt_embeddings``), loaded by *FashionChameleon Prompt Embeddings* (no umT5-XXL);
- ``input/fashionchameleon_demo_person.png`` and ``..._garment1/2/3.png``: a figure and three garments.

The weights are **random** (seeded): the demo shows the pipeline run (stream, two garment switches, decode, video
file) in well under a minute on a CPU, and its frames are noise. The FashionChameleon weights are not public; a
student, VAE and prompt features trained on the pack's synthetic fashion world (same three kinds of file) replace
these by file: pass them with ``--student``, ``--vae`` and ``--prompt`` and the ``demo`` template shows a garment
actually switching, unchanged.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch

from ..checkpoints import save_transformer, save_vae
from ..config import preset
from ..testing import tiny_transformer
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


def write_demo(models: str | Path, input_dir: str | Path, *, seed: int = 0, student: str | Path | None = None,
               vae: str | Path | None = None, prompt: str | Path | None = None) -> dict[str, Path]:
    """Write the demo files (random, seeded; or copies of the given trained files) and return their paths."""
    models, input_dir = Path(models), Path(input_dir)
    out = {k: models / v for k, v in FILES.items()}
    for p in out.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    config = preset("tiny")
    if student is None:
        save_transformer(out["student"], tiny_transformer(seed, config), kind="student",
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chameleon_core.tools.demo_models", description=__doc__.split("\n")[0])
    p.add_argument("--comfyui", help="a ComfyUI folder: writes into its models/ and input/")
    p.add_argument("--models", help="a ComfyUI models folder (instead of --comfyui)")
    p.add_argument("--input", help="a ComfyUI input folder (instead of --comfyui)")
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
    for name, path in write_demo(models, input_dir, seed=args.seed, student=args.student, vae=args.vae,
                                 prompt=args.prompt).items():
        logger.info("%s: %s", name, path)
    logger.info("Load the 'demo' template (Workflow > Browse Templates > comfyui-fashionchameleon) and Run.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
