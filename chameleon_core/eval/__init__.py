"""Scoring generated videos: ``python -m chameleon_core.eval <subcommand>`` (see :mod:`.cli`).

- ``hgc``: real videos, HGC-Bench style (identity, motion, smoothness, image quality, garment consistency) from the
  benchmark's ``meta_data.csv`` and a folder of generated videos (:mod:`.hgc`). Weight-free metrics (optical flow,
  warping error, flow-interpolation smoothness, sharpness) live in :mod:`.flow`; the model-based ones (CLIP / DINOv2
  garment similarity, ArcFace face identity, LAION aesthetic score) load from files the user gives
  (:mod:`.feature_models`).
- ``world``: exact scores on the synthetic fashion world, from its ground-truth masks (:mod:`.world`).

Nothing here imports ComfyUI or the training code.
"""
