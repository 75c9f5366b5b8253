"""The synthetic fashion world: a procedural video world small enough to train the whole pipeline on a CPU, where
the right answer is known exactly, made for the latent grid its codec sees (docs/world.md).

Fixed choices (the pipeline depends on them):

- **Resolution 64 x 64, 33 frames** by default (:data:`SIZE`, :data:`FRAMES`; any ``4k+1`` frame count works).
  The codec is a Wan2.2-architecture VAE (16x spatial, 4x temporal, 48 latent channels), so a clip is a latent
  ``[48, 9, 4, 4]``: 9 latent frames = three chunks of 3. The reference and garment images are 64 x 64 too.
- Colours are exact: no antialiasing, so every pixel has one label and one palette colour, and the masks partition
  the frame. The world is animated on fours (one picture per latent frame) and every motion is a loop whose single
  frames say where it goes next.
- The codec must pass its gate (:func:`.codec.check_codec_gate`) before anything trains on it.

Attributes (:mod:`.catalog`): identity (skin, hair colour, background; one build and one face), garment (kind
``shirt``/``dress``, colour, pattern ``plain``/``stripes``/``checks``/``dots``, sleeves ``short``/``long``), motion
(``walk``, ``turn``, ``sway``, ``raise_arms``, ``pan``) and the clip's phase in its motion. A clip is fully determined
by its attributes.

Public API:

- :func:`sample_world` ``(seed, split) -> WorldSample``; :func:`split_of`; :func:`sample_switch_garment`
  ``(sample, seed) -> Garment`` (same kind, other colour). ``split`` is ``train`` or ``test``: test holds the
  combinations ``(skin, hair, garment colour, pattern, motion)`` never seen in training.
- :func:`render` ``(sample, size=, frames=, garment=None, switch_to=None, switch_frame=None) -> Rendered`` (from
  the sample's phase on; any length continues the motion):
  ``.frames`` uint8 ``[T, H, W, 3]``, ``.labels`` uint8 ``[T, H, W]`` (0 background, 1 skin, 2 hair, 3 trousers,
  4 garment), ``.masks`` dict of bool ``[T, H, W]`` (``garment``, ``body``, ``background``),
  ``.float_frames()`` 0..1. With ``switch_to``/``switch_frame`` frames ``>= switch_frame`` wear ``switch_to``.
- :func:`render_reference` ``(sample, size=) -> Rendered`` (T = 1; the clip's first frame in
  ``sample.reference_garment``);
  :func:`render_garment_on_white` ``(garment, size=) -> uint8 [H, W, 4]`` RGBA try-off image.
- :func:`caption` ``(sample, garment=None, garment_words=False) -> {"en_long": [dynamic, static], "en_short": ...}``
  (no garment words by default); :func:`encode_caption` ``(text, dim=64, max_len=None, seed=0) -> [1, L, dim]``
  (deterministic: one fixed random vector per word plus one per position, no learning);
  :func:`save_caption_features` writes it with ``chameleon_core.text.save_prompt_embeddings``.
- :func:`write_dataset` ``(root, split, count, size, frames, seed) -> Path`` of ``root/<split>.csv`` (columns
  ``video, prompt, width, height``, readable by ``chameleon_core.training.data.read_train_csv`` and ``prepare``).
  Per sample under ``root/<split>/``: ``<stem>.mp4`` (lossless H.264 RGB), ``<stem>_src.png`` (reference),
  ``<stem>_cloth.png`` (garment on white, RGBA), ``<stem>_labels.npz`` (``labels`` uint8 ``[T, H, W]``),
  ``<stem>.json`` (attributes, caption, frames, size, seed). :func:`read_metadata` reads the JSON back (``sample``
  a :class:`WorldSample`, ``switch_garment`` a :class:`Garment`); ``dataset.load_labels`` the labels;
  ``dataset.ground_truth(meta, frames=, switch_frame=)`` re-renders the truth.
- :func:`train_codec` ``(out, plan=, quick=, size=, seed=, init=) -> dict`` trains the VAE in two phases (pictures,
  then video windows) and saves it with ``chameleon_core.checkpoints.save_vae`` (loadable by ``load_vae``), reporting
  its gate; :func:`load_codec` ``(path) -> WanVAE``; ``codec.codec_gate`` / ``codec.check_codec_gate``.
- Metrics live in :mod:`chameleon_core.eval.world` (every pixel classified against the whole palette: garment colour
  accuracy and leakage inside the garment mask, pattern, identity, motion agreement, temporal smoothness, switch cut;
  ``score_video`` runs them all) and ``python -m chameleon_core.eval world``.
"""

from .captions import TEXT_DIM, caption, encode_caption, save_caption_features
from .catalog import (
    FRAMES,
    GARMENT_COLOUR,
    MOTION,
    PATTERN,
    SIZE,
    Garment,
    Identity,
    WorldSample,
    sample_switch_garment,
    sample_world,
    split_of,
    with_garment,
)
from .codec import load_codec, train_codec
from .dataset import read_metadata, write_dataset
from .render import Rendered, render, render_garment_on_white, render_reference

__all__ = [
    "FRAMES",
    "GARMENT_COLOUR",
    "MOTION",
    "PATTERN",
    "SIZE",
    "TEXT_DIM",
    "Garment",
    "Identity",
    "Rendered",
    "WorldSample",
    "caption",
    "encode_caption",
    "load_codec",
    "read_metadata",
    "render",
    "render_garment_on_white",
    "render_reference",
    "sample_switch_garment",
    "sample_world",
    "save_caption_features",
    "split_of",
    "train_codec",
    "with_garment",
    "write_dataset",
]
