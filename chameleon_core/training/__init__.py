"""FashionChameleon training: data preparation, teacher SFT, in-context teacher forcing and GR-DMD.

A package of its own: it imports the core (:mod:`chameleon_core`), and nothing in the core or in ``nodes/`` imports
it. Entry point: ``python -m chameleon_core.training {prepare,sft,forcing,dmd,bench} --config CONFIG.json|PRESET``,
identical under ``torchrun --nproc_per_node N -m chameleon_core.training ...``. See the README's Training section.

Modules:

- :mod:`.config` -- the frozen :class:`~.config.TrainConfig` (one section per concern), JSON presets, overrides;
- :mod:`.distributed` -- process-group init (torchrun or one process, bounded timeout), rank helpers;
- :mod:`.faults` -- an error on any process ends the whole job in seconds, printed once (watchdog, heartbeats);
- :mod:`.parallel` -- FSDP2 wrapping, per-block activation checkpointing, full state-dict gathering, export;
- :mod:`.optim` -- AdamW, warm-up scheduler, gradient clipping;
- :mod:`.checkpoint` -- resumable checkpoints (DCP shards + trainer state + RNG of every rank), saved in the
  background, read without running code from the files;
- :mod:`.metrics` -- ``metrics.jsonl`` and the progress bar;
- :mod:`.latent_cache` -- the latent-cache format, its reader and the deterministic bucketed sampler;
- :mod:`.runtime` -- :class:`~.runtime.Run`, which ties the above together for every stage;
- :mod:`.flow` -- flow-matching timestep sampling and the ``w(t)`` loss weights;
- :mod:`.data`, :mod:`.prepare`, :mod:`.stage_sft`, :mod:`.forcing_mask`, :mod:`.stage_forcing`, :mod:`.cli`;
- :mod:`.estimate` -- ``python -m chameleon_core.training.estimate``: memory, step time and GPU-hours of the 5B
  stages by GPU count (an estimate calibrated on one measured point).
"""
