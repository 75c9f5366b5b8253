"""The synthetic fashion world trained end to end: :mod:`.pipeline` (world -> codec -> SFT -> forcing -> GR-DMD ->
streams, switches, metrics) and :mod:`.reward` (the world's GR-DMD stand-in reward). Run it with
``python -m chameleon_core.training.world run --out DIR [--quick]``. It lives with training because it trains; the
world itself (:mod:`chameleon_core.world`) and its metrics (:mod:`chameleon_core.eval.world`) are plain core."""
