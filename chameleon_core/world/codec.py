"""The world's codec: a small VAE of the Wan2.2 architecture (the core's own :mod:`chameleon_core.vae_modules`),
trained on world frames, saved with :func:`chameleon_core.checkpoints.save_vae` so every loader of the pack reads it
(the any-size VAE loader node included) and streaming decode and disentangle run their real code; and its **gate**.

Shape (:data:`CODEC_CONFIG`): Wan2.2 family (2x2 patchify, residual stages with the parameter-free shortcuts),
48 latent channels, four stages (16x spatial, 4x temporal), encoder width 16, decoder width 32, one residual block
per encoder stage: 2.6 M parameters, 5.2 MB in bf16. At 64 x 64 a clip of 33 frames is a latent ``[48, 9, 4, 4]``.

Training (:func:`train_codec`) has two phases, because the world is animated *on fours*
(:func:`chameleon_core.world.render.pose_frame`): every latent frame holds one picture, so the codec is first of all
an image codec.

1. **Images**: single frames through the causal network's first-frame path (the lone first frame every clip
   starts with). Run with the causal convolutions' current-frame taps only (:func:`_first_frame_convs`: the earlier
   taps see zero history on a first frame, so this is the same function, three times cheaper).
2. **Video**: the temporal taps are initialised so a later 4-frame group is encoded and decoded as its picture
   (:func:`init_temporal_taps`: earlier taps zero, the temporal downsampling averages the group, the temporal
   upsampling repeats the current frame), then fine-tuned on 9-frame windows (a first frame and two groups) of world
   clips, which trains the causal caches the way streaming uses them.

A run can continue a saved codec (``--init``), and ``--decoder-only`` trains the decoder alone: the encoder is
rounded to bf16 (as the pack ships it) and frozen, so latent caches already prepared with it stay valid bit for bit.
The shipped codec took about 110 CPU minutes in four continued runs: 60 min of pictures from scratch (12,200 steps),
two runs of both phases (14 + 6 min at lr 2e-3, 13 + 5 min at lr 1e-3; the gate then read colour 0.924, identity
error 0.109), and a decoder-only run (7 min of pictures at lr 3e-4, 4 min of video): colour 0.961, identity error
0.080, 28.5 dB, on 16 held-out clips, bf16 (docs/experiments/world.md).

Loss: L1 + squared error of the decoded pixels (in [-1, 1]) + ``KL_WEIGHT`` x the KL divergence of the encoder's
posterior from N(0, 1) *in the DiT's latent space* (``chameleon_core.latents`` Wan2.2 statistics), so the latents
the DiT sees have roughly unit scale. The posterior is sampled during training; encoding returns its mean, as
ComfyUI's does.

**The gate** (:func:`codec_gate`): before anything trains on a codec, its reconstruction of held-out ground-truth
clips (whole-clip :meth:`WanVAE.encode` / :meth:`WanVAE.decode`, as the pipeline uses it) is scored with the world's
metrics, on masks from the renderer's labels: garment colour accuracy must reach :data:`GATE_COLOUR` and the
identity error (skin and hair colour) stay at most :data:`GATE_IDENTITY_ERROR`. A codec that fails cannot show a
garment, whatever the DiT learns; the pipeline stops with :class:`CodecGateError` saying so.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import types
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from chameleon_core.latents import FAMILIES
from chameleon_core.vae import VAEConfig, WanVAE, build_vae
from chameleon_core.vae_modules import CausalConv3d, Resample, ResidualBlock, StepCache, conv3d, patchify, unpatchify

from .catalog import FRAMES, SIZE, sample_world
from .render import render

logger = logging.getLogger(__name__)

CODEC_CONFIG = VAEConfig("wan2.2", dim=16, decoder_dim=32, z_dim=48, dim_mult=(1, 2, 2, 2), num_res_blocks=1)
KL_WEIGHT = 1e-4
GATE_COLOUR = 0.9
"""Garment colour accuracy the codec's reconstruction of held-out ground truth must reach."""
GATE_IDENTITY_ERROR = 0.1
"""Identity error (1 - mean of skin and hair colour accuracy) it may not exceed."""
GATE_CLIPS = 16
"""Held-out clips the gate scores."""
VIDEO_FRAMES = 9
"""Frames per video window in phase 2: the first frame and two 4-frame groups."""


@dataclass(frozen=True)
class CodecPlan:
    """How long each training phase runs (steps or seconds, whichever ends first) and on what."""

    image_steps: int = 40_000
    image_seconds: float = 3600.0
    image_batch: int = 16
    video_steps: int = 10_000
    video_seconds: float = 1200.0
    video_batch: int = 4
    lr: float = 2e-3
    video_lr: float = 1e-4
    pool: int = 400
    """Training clips rendered once; phase 1 draws their pictures, phase 2 windows of them."""
    gate_clips: int = GATE_CLIPS
    """Held-out clips the gate scores at the end of training."""
    decoder_only: bool = False
    """Train the decoder alone (continuing from ``init``): the encoder, and so every latent a cache was prepared
    with, stays bit for bit. Its weights are first rounded to bf16, the precision the pack ships them in."""


QUICK_PLAN = CodecPlan(image_steps=20, image_seconds=30.0, video_steps=5, video_seconds=15.0, pool=8, gate_clips=2)


class CodecGateError(RuntimeError):
    """The codec cannot show a garment: its reconstruction of the ground truth fails the gate."""


# -------------------------------------------------------------------------------------------------------------------
# Data
# -------------------------------------------------------------------------------------------------------------------


def world_clips(count: int, split: str, *, size: int, frames: int, seed: int) -> torch.Tensor:
    """``count`` rendered clips of ``split`` -> ``[N, 3, frames, H, W]`` in [-1, 1]."""
    clips = [render(sample_world(seed + i, split), size=size, frames=frames).float_frames() for i in range(count)]
    return torch.stack(clips).permute(0, 4, 1, 2, 3) * 2.0 - 1.0


def pictures(clips: torch.Tensor) -> torch.Tensor:
    """The distinct pictures of on-fours clips ``[N, 3, T, H, W]`` (frame 0 and the first frame of every group)
    -> ``[N * (1 + (T - 1) // 4), 3, H, W]``."""
    return clips[:, :, ::4].permute(0, 2, 1, 3, 4).flatten(0, 1)


# -------------------------------------------------------------------------------------------------------------------
# Forward passes with gradient
# -------------------------------------------------------------------------------------------------------------------


def _posterior(model, moments: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder moments -> (latent: a posterior sample, or the mean with no generator; KL per element)."""
    z_dim = model.z_dim
    mu, logvar = moments[:, :z_dim], moments[:, z_dim:].clamp(-30.0, 20.0)
    family = FAMILIES["wan2.2"]
    mean, std = (torch.tensor(v, dtype=mu.dtype).view(1, -1, 1, 1, 1) for v in (family.mean, family.std))
    z = mu if generator is None else mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)
    # KL( N(mu, var) || N(mean, std^2) ) per element = KL of the normalised posterior from N(0, 1)
    var_n = torch.exp(logvar) / std**2
    return z, 0.5 * (((mu - mean) / std) ** 2 + var_n - torch.log(var_n) - 1.0)


def training_forward(model, video: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pass with gradient: video ``[B, 3, 1 + 4k, H, W]`` -> (unclamped reconstruction, KL per latent
    element). The latent is sampled from the posterior with ``generator``; with None it is the posterior mean, and
    the reconstruction equals ``WanVAE.decode(WanVAE.encode(video), clamp=False)`` (the inference path)."""
    cache = StepCache({}, first=True)
    bounds = [(0, 1)] + [(i, i + 4) for i in range(1, video.shape[2], 4)]
    moments = []
    for a, b in bounds:
        h = model.encoder(patchify(video[:, :, a:b], model.patch_size), cache)
        moments.append(model.conv1(h))
        cache.first = False
    z, kl = _posterior(model, torch.cat(moments, dim=2), generator)
    cache = StepCache({}, first=True)
    out = []
    for i in range(z.shape[2]):
        out.append(unpatchify(model.decoder(model.conv2(z[:, :, i : i + 1]), cache), model.patch_size))
        cache.first = False
    return torch.cat(out, dim=2), kl


@contextlib.contextmanager
def _first_frame_convs(model: nn.Module) -> Iterator[None]:
    """Within the block, causal convolutions compute only their current-frame tap: on a stream's first frame the
    earlier taps see zero history, so this is the same function at a third of the cost (phase 1 trains nothing
    but first frames). The cache is not written: use only for single first frames."""
    patched = []
    for module in model.modules():
        if isinstance(module, CausalConv3d) and module.history:
            def forward(self, x, cache=None):  # noqa: ARG001 - the cache is not needed on a first frame
                return conv3d(x, self.weight[:, :, -1:], self.bias, padding=self.padding)

            module.forward = types.MethodType(forward, module)
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def image_forward(model, images: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase 1's pass: pictures ``[B, 3, H, W]`` as one-frame videos -> (reconstruction ``[B, 3, H, W]``, KL)."""
    with _first_frame_convs(model):
        rec, kl = training_forward(model, images[:, :, None], generator)
    return rec[:, :, 0], kl


@torch.no_grad()
def init_temporal_taps(model: nn.Module) -> None:
    """After phase 1: make a later 4-frame group go through the network as its picture does. Earlier taps of every
    causal convolution to zero; the encoder's temporal downsampling averages the two newest frames of its window;
    the decoder's temporal upsampling emits the current frame twice."""
    for module in model.modules():
        if isinstance(module, CausalConv3d) and module.history:
            module.weight[:, :, :-1] = 0.0
        if isinstance(module, Resample) and module.mode == "downsample3d":
            w = module.time_conv.weight  # [C, C, 3, 1, 1] over [previous group's last frame, two frames]
            w.zero_()
            eye = torch.eye(w.shape[0], dtype=w.dtype)[:, :, None, None]
            w[:, :, 1], w[:, :, 2] = 0.5 * eye, 0.5 * eye
            module.time_conv.bias.zero_()
        if isinstance(module, Resample) and module.mode == "upsample3d":
            w = module.time_conv.weight  # [2C, C, 3, 1, 1]; channel half k is output frame 2t + k
            w.zero_()
            c = w.shape[1]
            eye = torch.eye(c, dtype=w.dtype)[:, :, None, None]
            w[:c, :, 2], w[c:, :, 2] = eye, eye
            module.time_conv.bias.zero_()


def zero_residual_branches(model: nn.Module) -> None:
    """Start every residual block as its shortcut (last convolution of the branch zero): the Wan2.2 stages'
    parameter-free shortcuts then carry the signal from the first step, which trains much faster from scratch."""
    for module in model.modules():
        if isinstance(module, ResidualBlock):
            nn.init.zeros_(module.residual[6].weight)
            nn.init.zeros_(module.residual[6].bias)


# -------------------------------------------------------------------------------------------------------------------
# Measuring
# -------------------------------------------------------------------------------------------------------------------


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors of pixels in 0..1."""
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def reconstruct(vae: WanVAE, frames: torch.Tensor) -> torch.Tensor:
    """Frames ``[T, H, W, 3]`` in 0..1 -> the codec's whole-clip reconstruction, same layout (clamped)."""
    with torch.no_grad():
        x = frames.permute(3, 0, 1, 2)[None].to(vae.device, vae.dtype) * 2.0 - 1.0
        rec = vae.decode(vae.encode(x))[0]
    return (rec.float().cpu().permute(1, 2, 3, 0) + 1.0) / 2.0


@dataclass(frozen=True)
class GateReport:
    """The codec's reconstruction of held-out ground truth, scored with the world's metrics."""

    garment_colour: float
    garment_colour_min: float
    identity_error: float
    skin: float
    hair: float
    psnr: float
    clips: int
    passed: bool

    def message(self) -> str:
        verdict = "passes" if self.passed else "FAILS"
        return (f"codec gate {verdict}: on {self.clips} held-out clips its reconstruction of the ground truth scores "
                f"garment colour accuracy {self.garment_colour:.3f} (lowest clip {self.garment_colour_min:.3f}; "
                f"needs >= {GATE_COLOUR}), identity error {self.identity_error:.3f} (skin {self.skin:.3f}, hair "
                f"{self.hair:.3f}; needs <= {GATE_IDENTITY_ERROR}), PSNR {self.psnr:.1f} dB")


def codec_gate(vae: WanVAE, *, size: int = SIZE, frames: int = FRAMES, clips: int = GATE_CLIPS,
               seed: int = 0) -> GateReport:
    """Score the codec's reconstruction of ``clips`` held-out (``test``-split) clips (see the module docstring)."""
    from chameleon_core.eval.world import garment_colour_accuracy, identity_scores

    colour, skin, hair, values = [], [], [], []
    for i in range(clips):
        sample = sample_world(seed * 100_003 + 70_000 + i, "test")
        truth = render(sample, size=size, frames=frames)
        rec = reconstruct(vae, truth.float_frames())
        colour.append(garment_colour_accuracy(rec, truth.float_frames(), truth.labels, sample.garment.colour))
        ident = identity_scores(rec, truth.labels, sample)
        skin.append(ident["skin"])
        hair.append(ident["hair"])
        values.append(psnr(rec, truth.float_frames()))

    def mean(xs: list[float]) -> float:
        xs = [x for x in xs if not math.isnan(x)]
        return sum(xs) / len(xs) if xs else math.nan

    c, s, h = mean(colour), mean(skin), mean(hair)
    err = 1.0 - (s + h) / 2
    return GateReport(c, min(colour), err, s, h, mean(values), clips,
                      passed=c >= GATE_COLOUR and err <= GATE_IDENTITY_ERROR)


def check_codec_gate(vae: WanVAE, path: str | Path | None = None, **kwargs) -> GateReport:
    """Run :func:`codec_gate` and raise :class:`CodecGateError` (what failed, the numbers, the fix) if it fails."""
    report = codec_gate(vae, **kwargs)
    logger.info("%s", report.message())
    if not report.passed:
        where = f" ({path})" if path else ""
        raise CodecGateError(
            f"the world codec{where} cannot show a garment: {report.message()}. Nothing was trained on it. Train "
            "it longer (python -m chameleon_core.world.codec --out FILE --init FILE continues a run) or pass a "
            "codec that passes (--codec FILE; the pack ships one in demo/models/vae/)"
        )
    return report


# -------------------------------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------------------------------


def train_codec(out: str | Path, *, plan: CodecPlan | None = None, quick: bool = False, size: int = SIZE,
                seed: int = 0, threads: int | None = None, init: str | Path | None = None,
                checkpoint_every: float = 600.0) -> dict:
    """Train the codec (both phases, see the module docstring) and save it with ``save_vae`` at ``out``.

    ``init``: a codec file to continue from (same config); with it phase 1 is skipped when ``plan.image_steps`` is
    0. A copy of the weights is saved to ``out`` every ``checkpoint_every`` seconds, so a stopped run can continue
    with ``init=out``. Returns the report: the gate's numbers on held-out clips, steps and seconds per phase.
    """
    from chameleon_core.checkpoints import save_vae

    plan = QUICK_PLAN if quick else (plan or CodecPlan())
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    if out.exists() and out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; pass the .safetensors file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    torch.manual_seed(seed)
    vae = build_vae(CODEC_CONFIG, seed=seed)
    if init is not None:
        vae.model.load_state_dict(load_codec(init).model.state_dict())
    else:
        zero_residual_branches(vae.model)
    if plan.decoder_only:
        if init is None:
            raise ValueError("decoder_only continues a trained codec: pass init (the codec whose encoder to keep)")
        with torch.no_grad():
            for p in vae.model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    model = vae.model.train()
    trainable = _set_trainable(model, decoder_only=plan.decoder_only)
    data = world_clips(plan.pool, "train", size=size, frames=FRAMES, seed=seed * 100_003)
    gen = torch.Generator().manual_seed(seed)
    last_save = [time.monotonic()]

    def save(note: str) -> None:
        model.eval()
        save_vae(out, WanVAE(model, CODEC_CONFIG), metadata={"world.codec": note})
        model.train()
        _set_trainable(model, decoder_only=plan.decoder_only)
        last_save[0] = time.monotonic()

    def run_phase(name: str, steps: int, seconds: float, lr: float, batch_fn) -> int:
        if steps <= 0 or seconds <= 0:
            return 0
        opt = torch.optim.Adam(trainable, lr=lr)
        t0 = time.monotonic()
        progress = _progress(steps, name)
        step = 0
        while step < steps and time.monotonic() - t0 < seconds:
            done = max(step / steps, (time.monotonic() - t0) / seconds)
            for group in opt.param_groups:  # warm-up, then cosine to zero over the phase
                group["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
            rec, target, kl = batch_fn()
            loss = (rec - target).abs().mean() + ((rec - target) ** 2).mean() + KL_WEIGHT * kl.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            step += 1
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.4f}")
            elif step % 200 == 1:
                logger.info("codec %s step %d: loss %.5f", name, step, loss.item())
            if time.monotonic() - last_save[0] > checkpoint_every:
                save(f"{name} step {step} (in progress)")
        if progress is not None:
            progress.close()
        return step

    images = pictures(data)

    def image_batch():
        x = images[torch.randint(len(images), (plan.image_batch,), generator=gen)]
        rec, kl = image_forward(model, x, gen)
        return rec, x, kl

    def video_batch():
        idx = torch.randint(len(data), (plan.video_batch,), generator=gen)
        # windows start at a group boundary (frame 4k), as a stream's pieces do after its first frame
        offs = torch.randint((FRAMES - VIDEO_FRAMES) // 4 + 1, (plan.video_batch,), generator=gen) * 4
        x = torch.stack([data[i, :, o : o + VIDEO_FRAMES] for i, o in zip(idx.tolist(), offs.tolist())])
        rec, kl = training_forward(model, x, gen)
        return rec, x, kl

    t_image = time.monotonic()
    image_steps = run_phase("images", plan.image_steps, plan.image_seconds, plan.lr, image_batch)
    if image_steps and not plan.decoder_only:  # a decoder-only run keeps the trained temporal taps
        init_temporal_taps(model)
    t_video = time.monotonic()
    video_steps = run_phase("video", plan.video_steps, plan.video_seconds, plan.video_lr, video_batch)
    t_end = time.monotonic()
    trained = WanVAE(model.eval().requires_grad_(False), CODEC_CONFIG)
    gate = codec_gate(trained, size=size, clips=plan.gate_clips, seed=seed)
    report = {
        "gate": asdict(gate),
        "image_steps": image_steps,
        "image_seconds": round(t_video - t_image, 1),
        "video_steps": video_steps,
        "video_seconds": round(t_end - t_video, 1),
        "seconds": round(time.monotonic() - start, 1),
        "plan": asdict(plan),
        "config": repr(CODEC_CONFIG),
        "init": str(init) if init else None,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
    }
    path = save_vae(out, trained, metadata={"world.codec": "trained", "world.gate_colour": f"{gate.garment_colour:.3f}",
                                             "world.gate_identity_error": f"{gate.identity_error:.3f}"})
    report["path"] = str(path)
    logger.info("codec saved to %s: %s (%.0f s)", path, gate.message(), report["seconds"])
    return report


def _set_trainable(model: nn.Module, *, decoder_only: bool) -> list[nn.Parameter]:
    """Mark what trains (everything, or the decoder side: ``conv2`` and ``decoder``) and return those parameters."""
    model.requires_grad_(not decoder_only)
    if decoder_only:
        model.conv2.requires_grad_(True)
        model.decoder.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def load_codec(path: str | Path, device: str = "cpu") -> WanVAE:
    """The saved codec as a :class:`~chameleon_core.vae.WanVAE` (through the pack's own loader)."""
    from chameleon_core.checkpoints import load_vae

    return load_vae(path, device=device)


def _progress(total: int, desc: str):
    import sys

    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"codec {desc}", unit="step")


def main(argv: list[str] | None = None) -> int:
    """``python -m chameleon_core.world.codec --out codec.safetensors [--minutes M] [--init FILE] [--quick]``:
    train the codec alone and print its report (with the gate) as JSON; ``--gate FILE`` only scores a codec."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m chameleon_core.world.codec",
                                description="Train the synthetic world's Wan2.2-architecture VAE and run its gate.")
    p.add_argument("--out", type=Path, help="the .safetensors file to write")
    p.add_argument("--gate", type=Path, help="only score this codec file against the gate")
    p.add_argument("--image-minutes", type=float, default=CodecPlan.image_seconds / 60,
                   help="wall-clock budget of phase 1 (pictures)")
    p.add_argument("--video-minutes", type=float, default=CodecPlan.video_seconds / 60,
                   help="wall-clock budget of phase 2 (video windows)")
    p.add_argument("--lr", type=float, default=CodecPlan.lr, help="phase 1's learning rate (lower to continue a run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on a busy machine)")
    p.add_argument("--quick", action="store_true", help="a smoke run (seconds; the codec is poor)")
    p.add_argument("--init", type=Path, default=None, help="a codec file to continue training from")
    p.add_argument("--video-lr", type=float, default=CodecPlan.video_lr, help="phase 2's learning rate")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init: train the decoder alone; the encoder (and latents already cached) stay exactly")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.gate is not None:
        if not args.gate.is_file():
            p.error(f"--gate {args.gate}: no such file; pass a codec written by this command")
        report = codec_gate(load_codec(args.gate))
        sys.stdout.write(report.message() + "\n")
        return 0 if report.passed else 1
    if args.out is None:
        p.error("--out is required (the .safetensors file to write), or --gate FILE to score a codec")
    for name in ("lr", "video_lr"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be a positive learning rate, got {getattr(args, name)}")
    if args.decoder_only and args.init is None:
        p.error("--decoder-only continues a trained codec: pass --init FILE (the codec whose encoder to keep)")
    for name in ("image_minutes", "video_minutes"):
        if not getattr(args, name) >= 0:
            p.error(f"--{name.replace('_', '-')} must be zero or more minutes, got {getattr(args, name)}")
    if args.init is not None and not args.init.is_file():
        p.error(f"--init {args.init}: no such file; pass a codec written by this command")
    if args.out.is_dir():
        p.error(f"--out {args.out} is a folder; pass the .safetensors file to write")
    plan = CodecPlan(image_seconds=args.image_minutes * 60, video_seconds=args.video_minutes * 60,
                     image_steps=CodecPlan.image_steps if args.image_minutes else 0, lr=args.lr,
                     video_lr=args.video_lr, decoder_only=args.decoder_only)
    report = train_codec(args.out, plan=plan, quick=args.quick, seed=args.seed, init=args.init,
                         threads=args.threads)
    sys.stdout.write(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
