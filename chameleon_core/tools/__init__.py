"""Command-line entry points, in one place (each is also a ``python -m`` command):

- ``python -m chameleon_core`` (:mod:`.stream`): stream a video with garment / prompt switches from weight files or
  random weights, decode each chunk as it comes, write an mp4 or PNG frames, report FPS and switch latency;
- ``python -m chameleon_core.tools.bench`` (:mod:`.bench`): streaming benchmark with random weights;
- ``python -m chameleon_core.tools.bench_vae`` (:mod:`.bench_vae`): streaming VAE decode benchmark;
- ``python -m chameleon_core.tools.prompt_embeds`` (:mod:`.prompt_embeds`): precompute umT5 prompt features;
- ``python -m chameleon_core.tools.tiny_checkpoints`` (:mod:`.tiny_checkpoints`): tiny random checkpoints in the real
  layouts, for tests and smoke runs;
- ``python -m chameleon_core.tools.workflows`` (:mod:`.workflows`): regenerate the example workflows.

Training has its own command, ``python -m chameleon_core.training``, beside its package.
"""
