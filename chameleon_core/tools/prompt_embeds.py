"""``python -m chameleon_core.tools.prompt_embeds``: encode prompts with umT5-XXL once and save each as a prompt
embeddings file (:func:`chameleon_core.text.save_prompt_embeddings`), for machines without the encoder."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch

from ..text import TEXT_LEN, encode_prompts, save_prompt_embeddings

logger = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m chameleon_core.tools.prompt_embeds``: encode prompts once and save each as a prompt embeddings file."""
    parser = argparse.ArgumentParser(
        prog="python -m chameleon_core.tools.prompt_embeds",
        description="Encode prompts with umT5-XXL (local HuggingFace-format folder) and save the features as "
        "safetensors files for load_prompt_embeddings.",
    )
    parser.add_argument("--encoder", required=True, help="umT5 folder (config.json + weights), or a diffusers folder")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder, if not inside or beside --encoder")
    parser.add_argument("--prompt", action="append", required=True, help="prompt text; repeat for several prompts")
    parser.add_argument("--out", action="append", required=True, help="output .safetensors; one per --prompt")
    parser.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16", help="encoder dtype (default: bf16)")
    parser.add_argument("--max-length", type=int, default=TEXT_LEN, help=f"token limit (default: {TEXT_LEN})")
    args = parser.parse_args(argv)
    if len(args.prompt) != len(args.out):
        parser.error(f"give one --out per --prompt, got {len(args.prompt)} prompts and {len(args.out)} outputs")

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        contexts = encode_prompts(
            args.encoder,
            args.prompt,
            device=args.device,
            dtype=_DTYPES[args.dtype],
            tokenizer_dir=args.tokenizer,
            max_length=args.max_length,
        )
        for prompt, out, context in zip(args.prompt, args.out, contexts):
            path = save_prompt_embeddings(out, context, prompt)
            logger.info("%s: %d tokens x %d (%s) <- %r", path, context.shape[1], context.shape[2], context.dtype, prompt)
    except (ValueError, FileNotFoundError, ImportError) as e:
        logger.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
