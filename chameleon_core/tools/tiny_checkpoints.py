"""Tiny random checkpoints in the real file layouts, for running the example workflows in a real ComfyUI on a CPU.

``python -m chameleon_core.tools.tiny_checkpoints --models DIR --input DIR`` writes, into a ComfyUI ``models`` folder:

- ``diffusion_models/chameleon_tiny_student.safetensors`` and ``..._teacher.safetensors``: Wan DiTs in ComfyUI's
  repackaged layout (``model.diffusion_model.`` prefix), 2 blocks of width 256, Wan2.2 latents, umT5 text width
  4096, tagged as student / teacher in their metadata;
- ``vae/chameleon_tiny_wan2.2_vae.safetensors``: a Wan2.2 VAE (real structure: 48 channels, 4x16x16) of width 8;
- ``text_encoders/chameleon_tiny_umt5.safetensors``: a umT5 encoder with umT5-XXL's width (4096) and depth (24)
  but one 8-wide head and an 8-wide FFN (~6M weights), plus a small sentencepiece model as ``spiece_model``;
- ``vae_approx/chameleon_tiny_taew2_2.safetensors``: a tiny streaming decoder (TAEHV) for Wan2.2 latents in the
  released ``taew2_2`` key layout, at widths (16, 8, 8, 8) instead of (256, 128, 64, 64);

and ``tiny_sizes.json``, the config overrides ComfyUI needs because it builds umT5-XXL and the Wan VAEs from fixed
full-size configs (``tests/comfyui_launcher.py`` applies them). Plus test images into ``--input``.

With ``--profiles``, also the public students' files under the names the example workflows use, each in the form its
project publishes, under its published name, with that student's shape at tiny size (:data:`PROFILE_FILES`): LongLive 2.0's merged
``.pt`` (Wan2.2 latents), LongLive 1.0's base ``.pt`` + LoRA, Self-Forcing's and CausVid's ``.pt`` (Wan2.1
latents), and a Wan2.1 VAE and TAEHV decoder of width 8.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from ..checkpoints import KIND_METADATA_KEY, save_vae
from ..config import WanConfig, preset
from ..profiles import LONGLIVE_MERGED_FORMAT, PROFILES
from ..checkpoints.layout_writers import write_generator_pt, write_lora_pt, write_transformer_checkpoint
from ..random_models import random_lora, random_transformer

logger = logging.getLogger(__name__)

TINY_DIT = WanConfig(**{**preset("tiny").__dict__, "text_dim": 4096, "text_len": 512, "name": "tiny"})
TINY_DIT_WAN21 = WanConfig(**{**preset("tiny-wan2.1").__dict__, "text_dim": 4096, "text_len": 512,
                              "name": "tiny-wan2.1"})
TINY_UMT5 = {
    "d_ff": 8, "d_kv": 8, "d_model": 4096, "num_heads": 1, "num_layers": 24, "vocab_size": 0,  # vocab: set below
    "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True, "layer_norm_epsilon": 1e-6,
    "model_type": "umt5", "relative_attention_num_buckets": 32, "eos_token_id": 1, "pad_token_id": 0,
    "decoder_start_token_id": 0, "is_encoder_decoder": True, "tie_word_embeddings": False,
}
TINY_WAN22_VAE = {"dim": 8, "dec_dim": 8}
TINY_WAN21_VAE = {"dim": 8}

FILES = {
    "student": "diffusion_models/chameleon_tiny_student.safetensors",
    "teacher": "diffusion_models/chameleon_tiny_teacher.safetensors",
    "vae": "vae/chameleon_tiny_wan2.2_vae.safetensors",
    "text_encoder": "text_encoders/chameleon_tiny_umt5.safetensors",
    "tiny_decoder": "vae_approx/chameleon_tiny_taew2_2.safetensors",
}
TINY_TAEHV_WIDTHS = (16, 8, 8, 8)
IMAGES = ("reference.png", "garment1.png", "garment2.png", "garment3.png", "first_frame.png")


def _published(profile: str, index: int = 0) -> str:
    """Where the example workflows expect a public student's file (its folder and the name they use)."""
    f = PROFILES[profile].files[index]
    return f"{f.folder}/{f.name}"


PROFILE_FILES = {
    "longlive2": _published("longlive2"),
    "longlive1": _published("longlive1"),
    "longlive1_lora": _published("longlive1", 1),
    "self_forcing": _published("self_forcing"),
    "causvid": _published("causvid"),
    "wan21_vae": "vae/chameleon_tiny_wan2.1_vae.safetensors",
    "wan21_tiny_decoder": "vae_approx/chameleon_tiny_taew2_1.safetensors",
}
"""The ``--profiles`` files: model folder path of each."""


def write_dit(path: Path, kind: str, seed: int) -> None:
    """A tiny DiT in ComfyUI's layout, tagged with its role and (from its config) its text_len."""
    model = random_transformer(TINY_DIT, seed=seed)
    write_transformer_checkpoint(model, path, layout="comfyui", metadata={KIND_METADATA_KEY: kind})


def write_vae(path: Path, seed: int) -> None:
    from ..vae import VAEConfig, build_vae

    cfg = VAEConfig("wan2.2", dim=TINY_WAN22_VAE["dim"], decoder_dim=TINY_WAN22_VAE["dec_dim"], z_dim=48)
    save_vae(path, build_vae(cfg, seed=seed))


def write_wan21_vae(path: Path, seed: int) -> None:
    """A Wan2.1 VAE with the released structure (ComfyUI builds that one) at width 8."""
    from ..vae import VAEConfig, build_vae

    save_vae(path, build_vae(VAEConfig("wan2.1", dim=TINY_WAN21_VAE["dim"], decoder_dim=TINY_WAN21_VAE["dim"],
                                       z_dim=16), seed=seed))


def write_profile_files(models: Path, seed: int) -> dict[str, Path]:
    """Each public student's file, in its project's published form, at tiny size (see the module docstring)."""
    out = {k: models / v for k, v in PROFILE_FILES.items()}
    for p in out.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    write_generator_pt(out["longlive2"], random_transformer(TINY_DIT, seed=seed + 10), dtype=torch.bfloat16,
                       extras={"checkpoint_format": LONGLIVE_MERGED_FORMAT, "model_name": "Wan2.2-TI2V-5B",
                               "merged_lora": True, "dtype": "bfloat16"})
    write_generator_pt(out["longlive1"], random_transformer(TINY_DIT_WAN21, seed=seed + 11))
    write_lora_pt(out["longlive1_lora"], random_lora(TINY_DIT_WAN21, rank=8, seed=seed + 12))
    write_generator_pt(out["self_forcing"], random_transformer(TINY_DIT_WAN21, seed=seed + 13),
                       ema=random_transformer(TINY_DIT_WAN21, seed=seed + 14))
    write_generator_pt(out["causvid"], random_transformer(TINY_DIT_WAN21, seed=seed + 15))
    write_wan21_vae(out["wan21_vae"], seed)
    write_taehv(out["wan21_tiny_decoder"], seed, latent_channels=16)
    return out


def write_taehv(path: Path, seed: int, latent_channels: int = 48) -> None:
    """A tiny random TAEHV decoder (Wan2.2: 48 channels, patch 2; Wan2.1: 16, patch 1) in the released key layout."""
    from ..taehv import TAEHVConfig, random_taehv

    cfg = TAEHVConfig(latent_channels=latent_channels, patch_size=2 if latent_channels == 48 else 1,
                      widths=TINY_TAEHV_WIDTHS)
    save_file({k: v.contiguous() for k, v in random_taehv(cfg, seed).state_dict().items()}, str(path))


def _sentencepiece_model() -> bytes:
    """A small unigram sentencepiece model (pad 0, eos 1, unk 2, as umT5's), trained in memory."""
    import sentencepiece as spm  # ComfyUI's own dependency

    words = ("a person wearing a red blue green white black striped floral denim silk cotton shirt dress jacket "
             "coat skirt trousers walking turning smiling in a studio street garden with soft light camera").split()
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(words, size=12)) for _ in range(400)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=buf, vocab_size=48, model_type="unigram", hard_vocab_limit=False,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )
    return buf.getvalue()


def write_umt5(path: Path, seed: int) -> dict:
    """The tiny encoder in the HF/ComfyUI T5 names; returns its config (with the vocabulary size filled in)."""
    proto = _sentencepiece_model()
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
    cfg = {**TINY_UMT5, "vocab_size": vocab}
    g = torch.Generator().manual_seed(seed)
    d, inner, ff = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"]

    def w(*shape, std=0.05):
        return torch.randn(*shape, generator=g) * std

    sd = {"shared.weight": w(vocab, d, std=1.0), "encoder.final_layer_norm.weight": torch.ones(d)}
    for i in range(cfg["num_layers"]):
        p = f"encoder.block.{i}.layer."
        for n in "qkv":
            sd[f"{p}0.SelfAttention.{n}.weight"] = w(inner, d)
        sd[f"{p}0.SelfAttention.o.weight"] = w(d, inner)
        sd[f"{p}0.SelfAttention.relative_attention_bias.weight"] = w(cfg["relative_attention_num_buckets"],
                                                                       cfg["num_heads"])
        sd[f"{p}0.layer_norm.weight"] = torch.ones(d)
        sd[f"{p}1.DenseReluDense.wi_0.weight"] = w(ff, d)
        sd[f"{p}1.DenseReluDense.wi_1.weight"] = w(ff, d)
        sd[f"{p}1.DenseReluDense.wo.weight"] = w(d, ff)
        sd[f"{p}1.layer_norm.weight"] = torch.ones(d)
    sd["spiece_model"] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    save_file(sd, str(path))
    return cfg


def write_images(folder: Path, size: int = 96) -> None:
    """A reference (a figure on a background) and three garments (plain, striped with alpha, greyscale)."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    person = np.stack([0.3 + 0.4 * yy, 0.5 + 0.2 * xx, 0.6 - 0.3 * yy], -1)
    person[(abs(xx - 0.5) < 0.15) & (yy > 0.2)] = (0.8, 0.6, 0.5)
    Image.fromarray((person * 255).astype(np.uint8)).save(folder / IMAGES[0])
    Image.fromarray(np.full((size, size * 3 // 4, 3), (200, 30, 40), np.uint8)).save(folder / IMAGES[1])
    stripes = np.zeros((size * 5 // 4, size, 4), np.uint8)
    stripes[..., :3] = np.where((np.arange(size) // 6 % 2)[None, :, None], (20, 40, 200), (240, 240, 240))
    stripes[..., 3] = 255
    stripes[: size // 8, :, 3] = 0  # transparent top band: composited on white
    Image.fromarray(stripes, "RGBA").save(folder / IMAGES[2])
    Image.fromarray((xx * 255).astype(np.uint8), "L").save(folder / IMAGES[3])
    scene = np.stack([0.2 + 0.6 * xx, 0.3 + 0.3 * yy, 0.8 - 0.5 * xx * yy], -1)  # a first frame for image-to-video
    Image.fromarray((scene * 255).astype(np.uint8)).resize((size * 2, size)).save(folder / IMAGES[4])


def write_all(models: str | Path, input_dir: str | Path | None = None, seed: int = 0,
              profiles: bool = False) -> dict[str, Path]:
    """Write every tiny checkpoint into a ComfyUI ``models`` folder (and images into ``input_dir``); with
    ``profiles``, the public students' files too."""
    models = Path(models)
    out = {k: models / v for k, v in FILES.items()}
    for p in out.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    write_dit(out["student"], "student", seed)
    write_dit(out["teacher"], "teacher", seed + 1)
    write_vae(out["vae"], seed)
    t5 = write_umt5(out["text_encoder"], seed)
    write_taehv(out["tiny_decoder"], seed)
    sizes = models / "tiny_sizes.json"
    sizes.write_text(json.dumps({"umt5xxl_model_config": t5, "wan22_vae": TINY_WAN22_VAE,
                                 "wan21_vae": TINY_WAN21_VAE}, indent=2))
    out["sizes"] = sizes
    if profiles:
        out.update(write_profile_files(models, seed))
    if input_dir is not None:
        write_images(Path(input_dir))
    logger.info("tiny checkpoints written under %s", models)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chameleon_core.tools.tiny_checkpoints",
                                description=__doc__.split("\n")[0])
    p.add_argument("--models", required=True, help="a ComfyUI models folder (subfolders are created)")
    p.add_argument("--input", help="a ComfyUI input folder for the test images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profiles", action="store_true",
                   help="also the public students' files (LongLive 2.0 / 1.0, Self-Forcing, CausVid) at tiny size")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name, path in write_all(args.models, args.input, args.seed, args.profiles).items():
        logger.info("%s: %s", name, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
