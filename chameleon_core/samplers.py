"""The bidirectional teacher sampler: flow-matching UniPC / Euler solvers and the in-context CFG sampling loop.

Two layers:

1. A model-agnostic solver layer, :func:`flow_unipc_sample` and :func:`flow_euler_sample`. Each integrates the
   rectified-flow ODE ``dx/dsigma = v(x, sigma)`` (``x_t = (1 - sigma) x0 + sigma eps``, ``v = eps - x0``) over a
   descending sigma list that ends in 0, calling ``velocity_fn(x, sigma, step)`` once per step.

   The UniPC solver follows Wan's ``FlowUniPCMultistepScheduler`` (Wan2.1 / Wan2.2 ``wan/utils/fm_solvers_unipc.py``),
   which is diffusers' ``UniPCMultistepScheduler`` with ``use_flow_sigmas=True, prediction_type="flow_prediction"``:
   data-prediction (x0) form, ``solver_type="bh2"`` (``B(h) = expm1(-h)``), ``lower_order_final=True`` (the last
   step is first order), the UniC corrector on every step after the first, a multistep warm-up, and
   ``lambda = log(alpha / sigma)`` with ``alpha = 1 - sigma``. The final step lands on sigma = 0, where lambda is
   infinite; it is first order there and returns the last x0 prediction exactly. ``tests/test_samplers.py`` checks
   this module against diffusers' scheduler step by step.

2. :func:`sample_teacher`: FashionChameleon's in-context teacher (``docs/design.md``: the method, the facts). The reference and
   garment latents are passed to the model, which places them as clean frames (timestep 0, RoPE frames 0 and 1) in
   front of the noisy video and returns the velocity of the video frames only. Classifier-free guidance mixes a
   positive and a negative prompt, ``v = v_neg + cfg * (v_pos - v_neg)``; the paper samples with UniPC, 50 steps,
   shift 5 and CFG 3.0.

Numerics: the solver state is fp32 (or float64 if the caller starts in float64) whatever the model's weight dtype,
and the per-step coefficients are Python floats computed in float64 from a host-side sigma list, so stepping never
syncs with the device.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Sequence

import torch

from .stream_options import ConditionWeighting, as_weighting
from .model import TextContext, WanModel
from .schedules import NUM_TRAIN_TIMESTEPS, model_timestep, teacher_sigmas

logger = logging.getLogger(__name__)

VelocityFn = Callable[[torch.Tensor, float, int], torch.Tensor]
"""``velocity_fn(x, sigma, step) -> v``: the flow velocity ``eps - x0`` at ``x`` (same shape as ``x``)."""

StepCallback = Callable[[int, int, torch.Tensor], None]
"""``callback(step, total, x0_estimate)``, called after each step; ``step`` is the 0-based index of the step just
finished, ``total`` the number of steps, ``x0_estimate`` the denoised prediction made at that step."""

StopPoll = Callable[[], bool]
"""``should_stop() -> bool``, polled before each step. True stops sampling, which returns the last completed state
(the core's interrupt contract, see :func:`chameleon_core.streaming.generate`: a stop is not an error and never
raises; the caller asks its own ``should_stop`` to know whether the result is complete)."""

SAMPLERS: tuple[str, ...] = ("unipc", "euler")
"""Sampler names accepted by :func:`sample_teacher`."""

MAX_UNIPC_ORDER = 3
"""Highest multistep order supported (Wan's teacher uses 2; 3 is the UniPC paper's choice for unguided sampling)."""


# ---------------------------------------------------------------------------------------------------------------
# Solver layer
# ---------------------------------------------------------------------------------------------------------------


def _sigma_list(sigmas: torch.Tensor | Sequence[float], *, below_one: bool) -> list[float]:
    """Validate a sigma schedule and return it as Python floats (one host copy, before any stepping)."""
    if isinstance(sigmas, torch.Tensor):
        if sigmas.ndim != 1:
            raise ValueError(
                f"sigmas must be a 1-D tensor of steps + 1 values, got shape {tuple(sigmas.shape)}; "
                "build it with chameleon_core.schedules.teacher_sigmas(steps, shift)"
            )
        values = [float(s) for s in sigmas.detach().to("cpu", torch.float64).tolist()]
    else:
        values = [float(s) for s in sigmas]
    if len(values) < 2:
        raise ValueError(
            f"sigmas must hold at least 2 values (one step), got {len(values)}; "
            "build it with chameleon_core.schedules.teacher_sigmas(steps, shift)"
        )
    if not all(math.isfinite(s) for s in values) or values[-1] < 0:
        raise ValueError(f"sigmas must be finite and >= 0, got {values}")
    if any(b >= a for a, b in zip(values, values[1:])):
        raise ValueError(
            f"sigmas must be strictly decreasing, got {values}; "
            "build it with chameleon_core.schedules.teacher_sigmas(steps, shift)"
        )
    if below_one and values[0] >= 1.0:
        # lambda = log((1 - sigma) / sigma) is -inf at sigma = 1; Wan's schedule starts at shift(0.999) < 1.
        raise ValueError(
            f"UniPC needs sigmas below 1 (log-SNR is infinite at sigma = 1), got sigmas[0] = {values[0]}; "
            "use chameleon_core.schedules.teacher_sigmas, which starts at shift(1 - 1/1000)"
        )
    return values


def _state_dtype(x: torch.Tensor) -> torch.dtype:
    """Solver-state dtype: fp32 for half-precision inputs (accumulating a 50-step ODE in bf16 loses detail)."""
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}; pass the initial noise as fp32")
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _log_snr(sigma: float) -> float:
    """``lambda = log(alpha / sigma)`` with ``alpha = 1 - sigma`` (flow matching); +inf at sigma = 0."""
    if sigma == 0.0:
        return math.inf
    return math.log(1.0 - sigma) - math.log(sigma)


def _unipc_coefficients(
    lam_target: float, lam_from: float, lam_history: list[float], order: int, corrector: bool
) -> tuple[float, list[float]]:
    """B(h) and the rho weights of one UniP (predictor) or UniC (corrector) update, bh2 variant, x0 form.

    ``lam_target`` / ``lam_from``: log-SNR at the step's end and start; ``lam_history``: log-SNR of the ``order - 1``
    older model outputs, newest first. Returns ``(B_h, rhos)``: for the predictor ``order - 1`` weights of the
    divided differences; for the corrector ``order`` weights, the last one for the new model output.
    """
    h = lam_target - lam_from
    hh = -h  # data-prediction form integrates in -lambda
    b_h = math.expm1(hh)  # bh2: B(h) = e^{-h} - 1
    if not corrector and order == 1:
        return b_h, []
    if corrector and order == 1:
        return b_h, [0.5]  # UniC-1 uses the trapezoid weight, as Wan / diffusers do
    rks = [(lam - lam_from) / h for lam in lam_history] + [1.0]
    # b_k = k! * phi_{k+1}(hh) / B(h), built from hh*phi_1 = expm1(hh) by phi_{k+1} = phi_k / hh - 1 / k!.
    b: list[float] = []
    h_phi_k = math.expm1(hh) / hh - 1.0
    factorial = 1
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    if not corrector and order == 2:
        return b_h, [0.5]  # the reference's fixed UniP-2 weight (not the solved one)
    size = order if corrector else order - 1
    # Vandermonde system R[row][col] = rks[col] ** row; tiny and on the host, so float64 and no device sync.
    r = torch.tensor([[rk**row for rk in rks[:size]] for row in range(size)], dtype=torch.float64)
    rhos = torch.linalg.solve(r, torch.tensor(b[:size], dtype=torch.float64))
    return b_h, [float(v) for v in rhos]


def _unipc_update(
    x: torch.Tensor,
    m_from: torch.Tensor,
    history: list[torch.Tensor],
    m_new: torch.Tensor | None,
    sig_from: float,
    sig_target: float,
    lam_history: list[float],
    order: int,
) -> torch.Tensor:
    """One UniP step (``m_new`` None) or UniC correction (``m_new`` the model output at ``sig_target``).

    x: state at ``sig_from``; m_from: x0 prediction at ``sig_from``; history: the ``order - 1`` older x0 predictions,
    newest first, at log-SNRs ``lam_history``. Returns the state at ``sig_target``. All tensors share x's shape.
    """
    corrector = m_new is not None
    alpha_t = 1.0 - sig_target
    if sig_target == 0.0:
        # lambda = +inf: h * phi_1 -> -1 and sigma_t / sigma_s -> 0, so the first-order step returns m_from. A
        # higher-order term would be 0 * inf; lower_order_final guarantees order 1 here, and the corrector never
        # targets sigma = 0 (no model call happens there).
        if order != 1 or corrector:
            raise RuntimeError("internal: the step to sigma = 0 must be a first-order prediction")
        return m_from.clone()
    lam_from, lam_target = _log_snr(sig_from), _log_snr(sig_target)
    b_h, rhos = _unipc_coefficients(lam_target, lam_from, lam_history, order, corrector)
    h_phi_1 = math.expm1(lam_from - lam_target)
    # First-order (DDIM-like) part: x_t = (sigma_t / sigma_s) x - alpha_t (e^{-h} - 1) m_s.
    out = x * (sig_target / sig_from) - m_from * (alpha_t * h_phi_1)
    scale = alpha_t * b_h
    h = lam_target - lam_from
    for rho, m_old, lam_old in zip(rhos, history, lam_history):
        rk = (lam_old - lam_from) / h
        out = out - (m_old - m_from) * (scale * rho / rk)  # divided difference D_k = (m_k - m_s) / r_k
    if corrector:
        out = out - (m_new - m_from) * (scale * rhos[-1])
    return out


def _check_velocity(v: torch.Tensor, x: torch.Tensor, step: int) -> None:
    if not isinstance(v, torch.Tensor) or v.shape != x.shape:
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(
            f"velocity_fn must return a tensor shaped like x {tuple(x.shape)}, got {got} at step {step}"
        )


def flow_unipc_sample(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    order: int = 2,
    callback: StepCallback | None = None,
    should_stop: StopPoll | None = None,
) -> torch.Tensor:
    """Integrate the flow ODE from ``sigmas[0]`` to ``sigmas[-1]`` with multistep UniPC (bh2, x0 form, UniC on).

    velocity_fn: ``(x, sigma, step) -> v``, v shaped like x; x: the state at ``sigmas[0]`` (any shape, e.g.
    ``[B, C, T, h, w]``); sigmas: 1-D, strictly decreasing, in [0, 1), ``steps + 1`` values, normally ending in 0
    (:func:`~chameleon_core.schedules.teacher_sigmas`). ``order`` is the multistep order (1..3; Wan uses 2); the
    first steps warm up from order 1 and the last step is first order. Returns the state at ``sigmas[-1]`` (fp32,
    or float64 for a float64 input). When ``should_stop()`` turns True, returns the last completed state instead
    (a noisy sample at the sigma reached).
    """
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_UNIPC_ORDER:
        raise ValueError(f"UniPC order must be an int in 1..{MAX_UNIPC_ORDER}, got {order!r}; Wan's teacher uses 2")
    sig = _sigma_list(sigmas, below_one=True)
    total = len(sig) - 1
    x = x.to(_state_dtype(x))
    lams = [_log_snr(s) for s in sig]

    # (x0 prediction, log-SNR) of past steps, oldest first; at most `order` kept.
    outputs: list[tuple[torch.Tensor, float]] = []
    x_prev: torch.Tensor | None = None  # state the last predictor started from, for the corrector
    prev_order = 0
    x0: torch.Tensor | None = None
    for i in range(total):
        if should_stop is not None and should_stop():
            logger.info("sampling stopped after %d of %d steps (sigma %.4f)", i, total, sig[i])
            return x
        v = velocity_fn(x, sig[i], i)
        _check_velocity(v, x, i)
        x0 = x - v.to(x.dtype) * sig[i]  # data prediction m_i
        if x_prev is not None:
            # UniC: redo the last step (sigma_{i-1} -> sigma_i) with the new prediction as an extra node. The model
            # output stays the one computed at the uncorrected x, as in the reference (no extra evaluation).
            older = outputs[-2::-1][: prev_order - 1]
            x = _unipc_update(
                x_prev, outputs[-1][0], [m for m, _ in older], x0, sig[i - 1], sig[i], [lam for _, lam in older],
                prev_order,
            )
        outputs.append((x0, lams[i]))
        del outputs[:-order]
        # Warm up from order 1 (not enough history yet), and lower_order_final: never more than the steps left.
        this_order = min(order, total - i, len(outputs))
        older = outputs[-2::-1][: this_order - 1]
        x_prev = x
        x = _unipc_update(
            x, x0, [m for m, _ in older], None, sig[i], sig[i + 1], [lam for _, lam in older], this_order
        )
        prev_order = this_order
        if callback is not None:
            callback(i, total, x0)
    return x


def flow_euler_sample(
    velocity_fn: VelocityFn,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    callback: StepCallback | None = None,
    should_stop: StopPoll | None = None,
) -> torch.Tensor:
    """Integrate the flow ODE with explicit Euler: ``x <- x + (sigma_{i+1} - sigma_i) * v(x, sigma_i)``.

    Same arguments and return as :func:`flow_unipc_sample` (sigmas may start at 1 here).
    """
    sig = _sigma_list(sigmas, below_one=False)
    total = len(sig) - 1
    x = x.to(_state_dtype(x))
    x0: torch.Tensor | None = None
    for i in range(total):
        if should_stop is not None and should_stop():
            logger.info("sampling stopped after %d of %d steps (sigma %.4f)", i, total, sig[i])
            return x
        v = velocity_fn(x, sig[i], i)
        _check_velocity(v, x, i)
        v = v.to(x.dtype)
        x0 = x - v * sig[i]
        x = x + v * (sig[i + 1] - sig[i])
        if callback is not None:
            callback(i, total, x0)
    return x


# ---------------------------------------------------------------------------------------------------------------
# The in-context teacher
# ---------------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}; {fix}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}; {fix}")
    return int(value)


def _check_condition(name: str, latent: torch.Tensor, in_dim: int, patch: tuple[int, int, int]) -> None:
    if not isinstance(latent, torch.Tensor):
        raise TypeError(f"{name} must be a latent tensor [B, {in_dim}, 1, h, w], got {type(latent).__name__}")
    if latent.ndim != 5 or latent.shape[2] != 1:
        raise ValueError(
            f"{name} must be one model-space latent frame [B, C, 1, h, w], got shape {tuple(latent.shape)}; "
            "VAE-encode a single image and convert it with chameleon_core.latents.to_model_space"
        )
    if latent.shape[1] != in_dim:
        raise ValueError(
            f"{name} has {latent.shape[1]} latent channels but the model takes in_dim={in_dim}; "
            f"encode it with the VAE that matches the model ({in_dim} channels: "
            f"{'Wan2.2' if in_dim == 48 else 'Wan2.1'} VAE)"
        )
    if latent.shape[3] % patch[1] or latent.shape[4] % patch[2]:
        raise ValueError(
            f"{name} latent size {tuple(latent.shape[3:])} (h, w) is not divisible by the patch size {patch[1:]}; "
            "use a pixel resolution that is a multiple of 32 (Wan2.2) / 16 (Wan2.1)"
        )
    if not latent.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {latent.dtype}")


def _prepare_prompt(model: WanModel, name: str, prompt: torch.Tensor | TextContext, batch: int) -> TextContext:
    """Text features ``[B or 1, L, text_dim]`` or a TextContext -> a TextContext on the model's device, checked."""
    if isinstance(prompt, TextContext):
        text = prompt
    elif isinstance(prompt, torch.Tensor):
        text = model.prepare_text(prompt)
    else:
        raise TypeError(
            f"{name} must be text-encoder features [B, L, text_dim] or a TextContext, got {type(prompt).__name__}"
        )
    if len(text.kv) != len(model.blocks):
        raise ValueError(
            f"{name} TextContext has {len(text.kv)} layers but the model has {len(model.blocks)}; "
            "prepare it with this model's prepare_text"
        )
    text_batch = text.kv[0][0].shape[0]
    if text_batch not in (1, batch):
        raise ValueError(
            f"{name} has batch size {text_batch} but the latents have {batch}; pass one prompt (batch 1) or one "
            "per sample"
        )
    if text.kv[0][0].device != model.device:
        text = text.to(model.device)
    return text


def _stack_prompts(positive: TextContext, negative: TextContext, batch: int) -> TextContext:
    """Positive then negative along the batch, each expanded to ``batch``: K/V ``[2B, Lc, H, D]`` per layer."""
    kv = []
    for (kp, vp), (kn, vn) in zip(positive.kv, negative.kv):
        kv.append(
            (
                torch.cat([kp.expand(batch, -1, -1, -1), kn.expand(batch, -1, -1, -1)]),
                torch.cat([vp.expand(batch, -1, -1, -1), vn.expand(batch, -1, -1, -1)]),
            )
        )
    return TextContext(tuple(kv))


def initial_noise(shape: Sequence[int], seed: int, device: torch.device | str) -> torch.Tensor:
    """Standard normal noise ``shape`` in fp32 from a CPU generator seeded with ``seed``, then moved to ``device``.

    Drawing on the CPU makes the same seed give the same video on any device (CUDA's generator draws a different
    stream from the CPU's).
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)


@torch.no_grad()
def sample_teacher(
    model: WanModel,
    *,
    positive: torch.Tensor | TextContext,
    negative: torch.Tensor | TextContext | None,
    reference: torch.Tensor,
    garment: torch.Tensor,
    latent_frames: int,
    steps: int = 50,
    cfg: float = 3.0,
    shift: float = 5.0,
    seed: int = 0,
    sampler: str = "unipc",
    callback: StepCallback | None = None,
    should_stop: StopPoll | None = None,
    batch_cfg: bool = True,
    integer_timesteps: bool = True,
    condition_weights: ConditionWeighting | Sequence[float] | None = None,
) -> torch.Tensor:
    """Sample a video with the bidirectional in-context teacher.

    Args:
        model: a :class:`~chameleon_core.model.WanModel` (any weight dtype; it returns fp32 velocities).
        positive / negative: prompt features ``[B or 1, L, text_dim]`` or prepared
            :class:`~chameleon_core.model.TextContext` (each is prepared once, not per step). ``negative`` may be
            None only when ``cfg == 1``.
        reference / garment: MODEL-SPACE condition latents ``[B, C, 1, h, w]`` (convert raw VAE latents with
            :func:`chameleon_core.latents.to_model_space` first). The model puts them at timestep 0 in front of the
            video.
        latent_frames: T, video latent frames to generate (``(frames - 1) // 4 + 1``).
        steps / shift: the schedule, :func:`~chameleon_core.schedules.teacher_sigmas` ``(steps, shift)``.
        cfg: guidance scale; ``v = v_neg + cfg * (v_pos - v_neg)``. 1 skips the negative pass; values in [0, 1)
            are legal (interpolation towards the negative prompt).
        seed: initial noise ``[B, C, T, h, w]`` comes from a CPU generator with this seed, in fp32.
        sampler: ``"unipc"`` (Wan's flow UniPC, order 2) or ``"euler"``.
        callback: ``callback(step, total, x0_estimate)`` after each step (0-based step), for progress / previews.
        should_stop: polled before each step; when it returns True, sampling stops and the last completed
            (still noisy) latents are returned -- the caller, who owns the flag, knows it stopped.
        batch_cfg: run the positive and negative passes as one batch of 2B (faster; twice the activation memory).
            False runs them one after the other (same result up to float rounding).
        integer_timesteps: feed the model ``1000 * sigma`` rounded to the model's compute dtype and truncated
            (:func:`~chameleon_core.schedules.model_timestep`), as the authors' pipeline does (its scheduler
            stores timesteps as int64); False feeds the exact ``1000 * sigma``. The solver always uses exact sigmas.
        condition_weights: condition weighting (:mod:`chameleon_core.stream_options`): a ``ConditionWeighting`` or one
            additive logit bias per step on the reference and garment keys, seen by the video queries (both CFG passes); 0 or None is the plain
            attention.

    Returns:
        Model-space video latents ``[B, C, T, h, w]`` fp32 on the model's device (convert with
        :func:`chameleon_core.latents.to_raw` before a VAE decode).
    """
    # 1. Validate (cheap checks first; each error says what, got, fix).
    config = model.config
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
    latent_frames = _check_int("latent_frames", latent_frames, 1, "for N pixel frames use (N - 1) // 4 + 1")
    steps = _check_int("steps", steps, 1, "the paper's teacher uses 50 steps")
    seed = _check_int("seed", seed, 0, "use a non-negative seed")
    if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not math.isfinite(cfg) or cfg < 0:
        raise ValueError(f"cfg must be a finite number >= 0, got {cfg!r}; the paper's teacher uses 3.0 (1 = no CFG)")
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}; Wan2.2 at 704p uses 5.0")
    for name, latent in (("reference", reference), ("garment", garment)):
        _check_condition(name, latent, config.in_dim, config.patch_size)
    if reference.shape != garment.shape:
        raise ValueError(
            f"reference and garment latents must have the same shape, got {tuple(reference.shape)} and "
            f"{tuple(garment.shape)}; encode both images at the video resolution"
        )
    weighting = as_weighting(condition_weights)
    condition_weights = None if weighting is None else weighting.for_steps(steps, "the teacher sampler")
    use_cfg = cfg != 1
    if use_cfg and negative is None:
        raise ValueError(f"cfg={cfg} needs a negative prompt, got None; pass negative features or set cfg=1")

    device = model.device
    batch, channels, _, height, width = reference.shape
    reference = reference.to(device, torch.float32)
    garment = garment.to(device, torch.float32)

    # 2. Prompts, prepared once; for batched CFG also the stacked [positive; negative] context and conditions.
    pos_text = _prepare_prompt(model, "positive", positive, batch)
    neg_text = _prepare_prompt(model, "negative", negative, batch) if use_cfg else None
    if use_cfg and batch_cfg:
        both_text = _stack_prompts(pos_text, neg_text, batch)
        both_ref = torch.cat([reference, reference])
        both_garment = torch.cat([garment, garment])

    # 3. Schedule and timesteps, on the host once (no per-step device sync); noise from a seeded CPU generator.
    sigmas = teacher_sigmas(steps, float(shift))
    t_values = sigmas[:-1] * NUM_TRAIN_TIMESTEPS
    if integer_timesteps:  # as the authors feed it: rounded to the compute dtype, then truncated
        t_values = torch.tensor([float(model_timestep(t, model.dtype)) for t in t_values.tolist()], dtype=torch.float64)
    t_table = t_values.to(device=device, dtype=torch.float32)  # [steps]
    x = initial_noise((batch, channels, latent_frames, height, width), seed, device)
    logger.debug(
        "teacher sampling: %s, %d steps, shift %s, cfg %s, latents %s, batch_cfg %s",
        sampler, steps, shift, cfg, tuple(x.shape), batch_cfg,
    )

    # 4. The guided velocity. Condition frames get timestep 0 inside the model.
    def velocity(x_t: torch.Tensor, sigma: float, step: int) -> torch.Tensor:
        t = t_table[step].expand(x_t.shape[0])  # [B]
        bias = condition_weights[step] if condition_weights is not None and condition_weights[step] != 0 else None
        if not use_cfg:
            return model(x_t, t, pos_text, reference=reference, garment=garment, condition_bias=bias)
        if batch_cfg:
            out = model(torch.cat([x_t, x_t]), t.repeat(2), both_text, reference=both_ref, garment=both_garment,
                        condition_bias=bias)
            v_pos, v_neg = out.chunk(2)
        else:
            v_pos = model(x_t, t, pos_text, reference=reference, garment=garment, condition_bias=bias)
            v_neg = model(x_t, t, neg_text, reference=reference, garment=garment, condition_bias=bias)
        return v_neg + cfg * (v_pos - v_neg)

    # 5. Integrate.
    if sampler == "unipc":
        return flow_unipc_sample(velocity, x, sigmas, order=2, callback=callback, should_stop=should_stop)
    return flow_euler_sample(velocity, x, sigmas, callback=callback, should_stop=should_stop)
