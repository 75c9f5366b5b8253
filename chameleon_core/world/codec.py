"""The world's codec: a small VAE of the Wan2.2 architecture (the core's own :mod:`chameleon_core.vae_modules`),
trained on world clips, saved with :func:`chameleon_core.checkpoints.save_vae` so every loader of the pack reads it
and streaming decode and disentangle run their real code.

Shape (:data:`CODEC_CONFIG`): Wan2.2 family (2x2 patchify, residual stages), 48 latent channels, four stages
(16x spatial, 4x temporal), base widths 16, one residual block per encoder stage. At 64 x 64 a clip of 33 frames
is a latent ``[48, 9, 4, 4]``.

Training (:func:`train_codec`): clips of 5 frames cut at random phases from rendered ``train``-split samples;
loss = mean squared error of the decoded pixels (in [-1, 1]) + ``KL_WEIGHT`` x the KL divergence of the encoder's
posterior from N(0, 1) *in the DiT's latent space* (``chameleon_core.latents.to_model_space`` of the Wan2.2
statistics), so the normalised latents the DiT sees have roughly unit scale. The posterior is sampled during
training (reparameterisation); encoding returns its mean, as ComfyUI's does. The encoder and decoder run step by
step with the same causal caches as inference (``encode_step`` / ``decode_step``), so training and streaming see
the same network. Reconstruction PSNR is measured on held-out (``test``) clips with :meth:`WanVAE.encode` /
:meth:`WanVAE.decode`.

Measured (shared 2-core machine, other jobs running; 0.2-0.3 s a step when it was quiet, up to 8 s under load):
341 steps reached 15.7 dB held-out PSNR; continued 3000 more (``--init``, 19 minutes) 16.3 dB (17.0 dB on training
clips; normalised latent std 0.76), while the training loss on 5-frame windows reads about 21 dB. On its
reconstructions of 8 held-out clips the world metrics read garment colour 0.45, pattern 0.46, identity error 0.16,
motion correct 0.38: the ceiling of any pipeline run on this codec. **Not usable yet.** The gap between the 5-frame
training loss and the 33-frame PSNR points at :data:`TRAIN_FRAMES`: 5-frame windows train only the first causal
step and one step after it, never a step whose caches come from a non-first step, which every later step of a
33-frame clip is; training on 9- or 13-frame windows is the first thing to try. Other fallbacks, in order: (2) a
Wan2.2-architecture codec with 8x spatial compression (three stages, 48 channels: 8 x 8 latents at 64 x 64, 16x
instead of 64x compression), which needs the core to accept a VAE whose geometry is not a released one
(``WanVAE.family`` refuses it today); (3) a codec with the same interface that is not learned, e.g. a closed-form
linear (PCA) map per 16 x 16 x 4-frame block. A truly exact
(lossless) codec with this interface cannot exist: 48 numbers per 3072 pixel values.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch

from chameleon_core.latents import FAMILIES
from chameleon_core.vae import VAEConfig, WanVAE, build_vae
from chameleon_core.vae_modules import StepCache, patchify, unpatchify

from .catalog import FRAMES, SIZE, sample_world
from .render import render

logger = logging.getLogger(__name__)

CODEC_CONFIG = VAEConfig("wan2.2", dim=16, decoder_dim=16, z_dim=48, dim_mult=(1, 2, 2, 2), num_res_blocks=1)
KL_WEIGHT = 1e-3
QUICK_STEPS = 20
TRAIN_FRAMES = 5
"""Frames per training clip (4k+1: a first frame and one 4-frame step, both of the causal network's step kinds);
the network then runs the same layers on clips of any length."""


def world_clips(count: int, split: str, *, size: int, frames: int, seed: int) -> torch.Tensor:
    """``count`` rendered clips of ``split`` -> ``[N, 3, frames, H, W]`` in [-1, 1]."""
    clips = [render(sample_world(seed + i, split), size=size, frames=frames).float_frames() for i in range(count)]
    return torch.stack(clips).permute(0, 4, 1, 2, 3) * 2.0 - 1.0


def training_forward(model, video: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pass with gradient: video ``[B, 3, 1 + 4k, H, W]`` -> (unclamped reconstruction, KL per latent
    element). The latent is sampled from the posterior with ``generator``; with None it is the posterior mean, and
    the reconstruction equals ``WanVAE.decode(WanVAE.encode(video), clamp=False)`` (the inference path)."""
    z_dim = model.z_dim
    cache = StepCache({}, first=True)
    bounds = [(0, 1)] + [(i, i + 4) for i in range(1, video.shape[2], 4)]
    moments = []
    for a, b in bounds:
        h = model.encoder(patchify(video[:, :, a:b], model.patch_size), cache)
        moments.append(model.conv1(h))
        cache.first = False
    moments = torch.cat(moments, dim=2)  # [B, 2z, T_lat, h, w]
    mu, logvar = moments[:, :z_dim], moments[:, z_dim:].clamp(-30.0, 20.0)
    family = FAMILIES["wan2.2"]
    mean, std = (torch.tensor(v, dtype=mu.dtype).view(1, -1, 1, 1, 1) for v in (family.mean, family.std))
    z = mu if generator is None else mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
    # KL( N(mu, var) || N(mean, std^2) ) per element = KL of the normalised posterior from N(0, 1)
    var_n = torch.exp(logvar) / std**2
    kl = 0.5 * (((mu - mean) / std) ** 2 + var_n - torch.log(var_n) - 1.0)
    cache = StepCache({}, first=True)
    out = []
    for i in range(z.shape[2]):
        out.append(unpatchify(model.decoder(model.conv2(z[:, :, i : i + 1]), cache), model.patch_size))
        cache.first = False
    return torch.cat(out, dim=2), kl


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors of pixels in 0..1."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def codec_psnr(vae: WanVAE, videos: torch.Tensor) -> float:
    """Mean reconstruction PSNR (dB, pixels in 0..1) of whole-video :meth:`WanVAE.encode` + :meth:`WanVAE.decode`
    over ``videos`` ``[N, 3, T, H, W]`` in [-1, 1]."""
    values = []
    with torch.no_grad():
        for v in videos:
            rec = vae.decode(vae.encode(v[None].to(vae.device, vae.dtype)))
            values.append(psnr((rec.float().cpu() + 1) / 2, (v[None] + 1) / 2))
    return sum(values) / len(values)


def train_codec(out: str | Path, *, steps: int = 1500, quick: bool = False, size: int = SIZE, frames: int = FRAMES,
                seed: int = 0, batch: int = 2, lr: float = 2e-3, pool: int = 96, threads: int | None = None,
                max_seconds: float | None = 600.0, init: str | Path | None = None) -> dict:
    """Train the codec on ``train``-split clips and save it with ``save_vae`` at ``out`` (a ``.safetensors`` path).

    ``quick`` trains at most :data:`QUICK_STEPS` steps and 30 s on a pool of 8 clips and measures PSNR on 1 (for
    tests and smoke runs: the codec is poor). ``pool`` clips of ``frames`` frames are rendered once; each step takes
    ``batch`` windows of :data:`TRAIN_FRAMES` frames at random offsets. Adam with a cosine decay over the run's
    progress: the larger of ``step / steps`` and ``elapsed / max_seconds``, so with ``max_seconds`` (a wall-clock
    budget for the training loop; 10 minutes by default, None for none) the run ends early but still anneals. Returns
    ``{"path", "psnr_test", "psnr_train", "latent_std", "steps", "seconds", "config"}``:
    PSNR (dB) on 8 held-out ``test`` clips of ``frames`` frames (and on 8 training clips), the std of the test
    clips' normalised latents. ``init``: a codec file to continue training from (same config).
    """
    from chameleon_core.checkpoints import save_vae

    if quick:
        steps, pool, max_seconds = min(steps, QUICK_STEPS), min(pool, 8), min(max_seconds or 30.0, 30.0)
    if frames < TRAIN_FRAMES or (frames - 1) % 4:
        raise ValueError(f"frames must be 4k+1 and at least {TRAIN_FRAMES}, got {frames}")
    if threads:
        torch.set_num_threads(threads)
    start = time.monotonic()
    torch.manual_seed(seed)
    vae = build_vae(CODEC_CONFIG, seed=seed)
    if init is not None:
        vae.model.load_state_dict(load_codec(init).model.state_dict())
    model = vae.model.train().requires_grad_(True)
    data = world_clips(pool, "train", size=size, frames=frames, seed=seed * 100_003)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loop_start = time.monotonic()

    def done_fraction(step: int) -> float:
        fraction = step / steps
        if max_seconds:
            fraction = max(fraction, (time.monotonic() - loop_start) / max_seconds)
        return min(fraction, 1.0)

    progress = _progress(steps)
    step = 0
    while step < steps and done_fraction(step) < 1.0:
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * done_fraction(step)))
        idx = torch.randint(len(data), (batch,), generator=gen)
        offs = torch.randint(frames - TRAIN_FRAMES + 1, (batch,), generator=gen)
        video = torch.stack([data[i, :, o : o + TRAIN_FRAMES] for i, o in zip(idx.tolist(), offs.tolist())])
        rec, kl = training_forward(model, video, gen)
        mse = torch.mean((rec - video) ** 2)
        loss = mse + KL_WEIGHT * kl.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if progress is not None:
            progress.update(1)
            progress.set_postfix(psnr=f"{10 * math.log10(4 / max(mse.item(), 1e-10)):.1f}")
        elif step % 25 == 1 or step == steps:
            logger.info("codec step %d/%d: mse %.5f, kl %.3f", step, steps, mse.item(), kl.mean().item())
    if progress is not None:
        progress.close()
    trained = WanVAE(model.eval().requires_grad_(False), CODEC_CONFIG)
    check = 1 if quick else 8
    test = world_clips(check, "test", size=size, frames=frames, seed=seed * 100_003 + 50_000)
    report = {
        "psnr_test": codec_psnr(trained, test),
        "psnr_train": codec_psnr(trained, data[:check]),
        "latent_std": latent_std(trained, test),
        "steps": step,
        "seconds": time.monotonic() - start,
        "config": {"size": size, "frames": frames, "batch": batch, "lr": lr, "pool": pool, "seed": seed,
                   "kl_weight": KL_WEIGHT, "vae": repr(CODEC_CONFIG)},
    }
    path = save_vae(out, trained, metadata={"world.psnr_test": f"{report['psnr_test']:.2f}"})
    report["path"] = str(path)
    logger.info("codec saved to %s: held-out PSNR %.2f dB (%.0f s)", path, report["psnr_test"], report["seconds"])
    return report


def latent_std(vae: WanVAE, videos: torch.Tensor) -> float:
    """Std of the model-space (normalised) latents of ``videos``: about 1 is what the DiT expects."""
    from chameleon_core.latents import to_model_space

    with torch.no_grad():
        z = torch.cat([to_model_space(vae.encode(v[None])) for v in videos])
    return z.std().item()


def load_codec(path: str | Path, device: str = "cpu") -> WanVAE:
    """The saved codec as a :class:`~chameleon_core.vae.WanVAE` (through the pack's own loader)."""
    from chameleon_core.checkpoints import load_vae

    return load_vae(path, device=device)


def _progress(total: int):
    import sys

    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="codec", unit="step")


def main(argv: list[str] | None = None) -> int:
    """``python -m chameleon_core.world.codec --out codec.safetensors [--steps N] [--max-seconds S] [--quick]``:
    train the codec alone and print its report as JSON."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m chameleon_core.world.codec",
                                description="Train the synthetic world's Wan2.2-architecture VAE and report its PSNR.")
    p.add_argument("--out", required=True, type=Path, help="the .safetensors file to write")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--max-seconds", type=float, default=600.0, help="wall-clock budget of the training loop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run (20 steps / 30 s at most)")
    p.add_argument("--init", type=Path, default=None, help="a codec file to continue training from")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    report = train_codec(args.out, steps=args.steps, quick=args.quick, seed=args.seed,
                         max_seconds=args.max_seconds or None, init=args.init)
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
