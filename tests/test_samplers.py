"""The teacher sampler: UniPC against diffusers' scheduler, Euler against a hand loop and exact flows, and the
in-context CFG loop on the tiny model against a hand-written loop."""

from __future__ import annotations

import math

import pytest
import torch

from chameleon_core.config import preset
from chameleon_core.model import TextContext, WanModel
from chameleon_core.samplers import (
    SAMPLERS,
    flow_euler_sample,
    flow_unipc_sample,
    initial_noise,
    sample_teacher,
)
from chameleon_core.schedules import teacher_sigmas

diffusers = pytest.importorskip("diffusers")

SHIFT = 5.0


# ---------------------------------------------------------------------------------------------------------------
# Solver layer
# ---------------------------------------------------------------------------------------------------------------


def _toy_problem(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    x0 = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64).to(dtype)
    noise = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64).to(dtype)
    return x0, noise


def _toy_velocity(x0: torch.Tensor):
    """The straight-to-x0 field plus nonlinear, sigma-dependent terms, so multistep and corrector terms matter."""

    def velocity(x: torch.Tensor, sigma: float, step: int = 0) -> torch.Tensor:
        return (x - x0) / max(sigma, 1e-3) + 0.5 * torch.tanh(2 * x) + 0.3 * math.sin(3 * sigma) * x

    return velocity


def _diffusers_unipc(sigmas: torch.Tensor, order: int, disable_corrector: bool = False):
    """diffusers' flow UniPC over exactly ``sigmas`` (steps + 1 values ending in 0).

    diffusers applies ``flow_shift`` to sigmas passed to ``set_timesteps``, so the already-shifted list goes in with
    ``flow_shift=1`` (an exact identity). It stores sigmas as float32; the returned list is that float32 list, for
    our solver to use too. ``set_begin_index(0)`` avoids its timestep lookup, which can hit duplicated int timesteps.
    """
    scheduler = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=1.0,
        solver_order=order,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        final_sigmas_type="zero",
        disable_corrector=list(range(len(sigmas))) if disable_corrector else [],
    )
    scheduler.set_timesteps(sigmas=sigmas[:-1].numpy())
    scheduler.set_begin_index(0)
    assert scheduler.sigmas[-1] == 0 and len(scheduler.sigmas) == len(sigmas)
    return scheduler, scheduler.sigmas.to(torch.float64)


def _run_diffusers(scheduler, velocity, x: torch.Tensor, max_steps: int | None = None) -> torch.Tensor:
    for i, t in enumerate(scheduler.timesteps[:max_steps]):
        v = velocity(x, float(scheduler.sigmas[i])).to(x.dtype)
        x = scheduler.step(v, t, x).prev_sample
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps", [5, 10, 50])
def test_unipc_matches_diffusers(steps, order, dtype):
    x0, noise = _toy_problem(dtype)
    velocity = _toy_velocity(x0)
    scheduler, sigmas = _diffusers_unipc(teacher_sigmas(steps, SHIFT), order)
    expected = _run_diffusers(scheduler, velocity, noise.clone())
    ours = flow_unipc_sample(velocity, noise.clone(), sigmas, order=order)
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_unipc_comparison_is_sensitive_to_order_and_corrector():
    """The toy field separates orders and corrector on/off by far more than the 1e-5 tolerance above."""
    x0, noise = _toy_problem(torch.float64)
    velocity = _toy_velocity(x0)
    _, sigmas = _diffusers_unipc(teacher_sigmas(10, SHIFT), 2)
    first = flow_unipc_sample(velocity, noise, sigmas, order=1)
    second = flow_unipc_sample(velocity, noise, sigmas, order=2)
    assert (first - second).abs().max() > 1e-3
    no_corrector, _ = _diffusers_unipc(teacher_sigmas(10, SHIFT), 2, disable_corrector=True)
    assert (_run_diffusers(no_corrector, velocity, noise.clone()) - second).abs().max() > 1e-3


@pytest.mark.parametrize("steps", [5, 50])
def test_teacher_sigmas_are_wan_flow_sigmas(steps):
    """Wan builds linspace(1 - 1/1000, 0, N + 1)[:-1], shifts it and appends 0; diffusers given that unshifted list
    and ``flow_shift`` reproduces ``teacher_sigmas``. (diffusers' own default list, linspace(1, 1/1000), differs.)"""
    scheduler = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=SHIFT
    )
    scheduler.set_timesteps(sigmas=torch.linspace(0.999, 0.0, steps + 1, dtype=torch.float64)[:-1].numpy())
    torch.testing.assert_close(scheduler.sigmas.double(), teacher_sigmas(steps, SHIFT), atol=1e-7, rtol=0)


def test_euler_matches_hand_loop():
    x0, noise = _toy_problem(torch.float64)
    velocity = _toy_velocity(x0)
    sigmas = teacher_sigmas(20, SHIFT)
    x = noise.clone()
    s = sigmas.tolist()
    for i in range(20):
        x = x + (s[i + 1] - s[i]) * velocity(x, s[i])
    torch.testing.assert_close(flow_euler_sample(velocity, noise, sigmas), x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("sample", [flow_euler_sample, flow_unipc_sample], ids=["euler", "unipc"])
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_straight_flows_recover_x0(sample, steps):
    """On the straight path noise -> x0 the exact velocity is ``noise - x0``; from any start, ``(x - x0) / sigma``
    flows straight to x0. Both solvers land on x0, and every x0 estimate passed to the callback is x0."""
    x0, noise = _toy_problem(torch.float32)
    sigmas = teacher_sigmas(steps, SHIFT)
    start = (1 - sigmas[0].item()) * x0 + sigmas[0].item() * noise
    estimates: list[tuple[int, int, torch.Tensor]] = []
    out = sample(lambda x, s, i: noise - x0, start, sigmas, callback=lambda i, n, e: estimates.append((i, n, e)))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    assert [(i, n) for i, n, _ in estimates] == [(i, steps) for i in range(steps)]
    for _, _, estimate in estimates:
        torch.testing.assert_close(estimate, x0, atol=1e-5, rtol=0)
    out = sample(lambda x, s, i: (x - x0) / s, noise * 3, sigmas)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_solver_state_is_fp32_for_half_inputs():
    x0, noise = _toy_problem(torch.float32)
    seen: list[torch.dtype] = []

    def velocity(x, s, i):
        seen.append(x.dtype)
        return (x - x0).to(torch.bfloat16)  # a bf16 model's output

    out = flow_unipc_sample(velocity, noise.to(torch.bfloat16), teacher_sigmas(4, SHIFT))
    assert out.dtype == torch.float32 and set(seen) == {torch.float32}


def test_stop_returns_last_completed_state():
    x0, noise = _toy_problem(torch.float64)
    velocity = _toy_velocity(x0)
    sigmas = teacher_sigmas(6, SHIFT)
    polls = iter([False, False, False, True])
    stopped = flow_euler_sample(velocity, noise, sigmas, should_stop=lambda: next(polls))
    x, s = noise.clone(), sigmas.tolist()
    for i in range(3):
        v = velocity(x, s[i])
        x = x + (s[i + 1] - s[i]) * v
    torch.testing.assert_close(stopped, x, atol=1e-12, rtol=0)

    scheduler, sigmas32 = _diffusers_unipc(sigmas, 2)
    polls = iter([False, False, True])
    stopped = flow_unipc_sample(velocity, noise, sigmas32, should_stop=lambda: next(polls))
    torch.testing.assert_close(
        stopped, _run_diffusers(scheduler, velocity, noise.clone(), max_steps=2), atol=1e-7, rtol=0
    )


@pytest.mark.parametrize(
    ("sigmas", "kwargs", "match"),
    [
        ([0.9, 0.9, 0.0], {}, "strictly decreasing"),
        ([0.9], {}, "at least 2"),
        ([1.0, 0.5, 0.0], {}, "below 1"),
        ([0.9, 0.5, float("nan")], {}, "finite"),
        ([0.9, 0.5, 0.0], {"order": 0}, "order"),
        ([0.9, 0.5, 0.0], {"order": 4}, "order"),
    ],
)
def test_unipc_rejects_bad_schedules(sigmas, kwargs, match):
    with pytest.raises(ValueError, match=match):
        flow_unipc_sample(lambda x, s, i: x, torch.zeros(2), torch.tensor(sigmas, dtype=torch.float64), **kwargs)


def test_solvers_reject_wrong_velocity_shape():
    with pytest.raises(ValueError, match="shaped like x"):
        flow_euler_sample(lambda x, s, i: x[:1], torch.zeros(2, 3), teacher_sigmas(2, SHIFT))


# ---------------------------------------------------------------------------------------------------------------
# The in-context teacher on the tiny preset
# ---------------------------------------------------------------------------------------------------------------

H = W = 4
FRAMES = 2


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = WanModel(preset("tiny")).eval()
    g = torch.Generator().manual_seed(7)
    cfg = model.config
    data = {
        "reference": torch.randn(1, cfg.in_dim, 1, H, W, generator=g),
        "garment": torch.randn(1, cfg.in_dim, 1, H, W, generator=g),
        "positive": torch.randn(1, 6, cfg.text_dim, generator=g),
        "negative": torch.randn(1, 3, cfg.text_dim, generator=g),
    }
    return model, data


def _sample(tiny, **overrides):
    model, data = tiny
    kwargs = dict(data, latent_frames=FRAMES, steps=4, cfg=3.0, shift=SHIFT, seed=0)
    kwargs.update(overrides)
    return sample_teacher(model, **kwargs)


def _hand_cfg_euler(model, data, seed, steps, cfg):
    """The teacher loop written out: CPU-seeded noise, Wan's int timesteps, two separate passes, Euler."""
    sigmas = teacher_sigmas(steps, SHIFT).tolist()
    x = torch.randn(1, model.config.in_dim, FRAMES, H, W, generator=torch.Generator().manual_seed(seed))
    conds = {"reference": data["reference"], "garment": data["garment"]}
    with torch.no_grad():
        for i in range(steps):
            t = torch.tensor([float(int(1000 * sigmas[i]))])
            v_pos = model(x, t, data["positive"], **conds)
            v_neg = model(x, t, data["negative"], **conds)
            x = x + (sigmas[i + 1] - sigmas[i]) * (v_neg + cfg * (v_pos - v_neg))
    return x


def test_teacher_matches_hand_written_loop(tiny):
    model, data = tiny
    out = _sample(tiny, sampler="euler", batch_cfg=False, seed=3)
    torch.testing.assert_close(out, _hand_cfg_euler(model, data, seed=3, steps=4, cfg=3.0), atol=1e-5, rtol=0)
    assert out.shape == (1, model.config.out_dim, FRAMES, H, W) and out.dtype == torch.float32


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_teacher_is_deterministic_per_seed(tiny, sampler):
    a = _sample(tiny, sampler=sampler, seed=11)
    b = _sample(tiny, sampler=sampler, seed=11)
    c = _sample(tiny, sampler=sampler, seed=12)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-2


def test_batched_cfg_equals_sequential(tiny):
    batched = _sample(tiny, batch_cfg=True)
    sequential = _sample(tiny, batch_cfg=False)
    torch.testing.assert_close(batched, sequential, atol=1e-5, rtol=1e-5)
    # and guidance matters at all here, so the comparison means something
    assert (_sample(tiny, cfg=1.0) - batched).abs().max() > 1e-2


def test_batched_cfg_with_batch_of_two(tiny):
    """B = 2 latents with one shared prompt: batched CFG stacks [pos x2, neg x2] and matches per-sample runs."""
    model, data = tiny
    two = {k: torch.cat([data[k], data[k].flip(-1)]) for k in ("reference", "garment")}
    both = sample_teacher(model, positive=data["positive"], negative=data["negative"], latent_frames=FRAMES, steps=3,
                          seed=5, **two)
    seq = sample_teacher(model, positive=data["positive"], negative=data["negative"], latent_frames=FRAMES, steps=3,
                         seed=5, batch_cfg=False, **two)
    torch.testing.assert_close(both, seq, atol=1e-5, rtol=1e-5)
    assert both.shape[0] == 2 and (both[0] - both[1]).abs().max() > 1e-3


def test_cfg_one_uses_the_positive_only(tiny):
    model, data = tiny
    with_negative = _sample(tiny, cfg=1.0)
    without = _sample(tiny, cfg=1.0, negative=None)
    assert torch.equal(with_negative, without)
    sigmas = teacher_sigmas(4, SHIFT)
    noise = torch.randn(1, 48, FRAMES, H, W, generator=torch.Generator().manual_seed(0))

    def positive_only(x, sigma, step):
        t = torch.tensor([float(int(1000 * sigma))])
        return model(x, t, data["positive"], reference=data["reference"], garment=data["garment"])

    with torch.no_grad():
        expected = flow_unipc_sample(positive_only, noise, sigmas)
    torch.testing.assert_close(without, expected, atol=1e-6, rtol=0)


def test_conditions_influence_the_video(tiny):
    _, data = tiny
    base = _sample(tiny)
    for name in ("reference", "garment"):
        changed = _sample(tiny, **{name: data[name] * -1.0})
        assert (changed - base).abs().max() > 1e-2, name


def test_model_gets_conditions_and_wan_timesteps(tiny, monkeypatch):
    """Each step calls the model once (batched CFG) with both conditions and t = int(1000 sigma); the prompts are
    prepared once, not per step."""
    model, data = tiny
    calls = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args, kwargs)), with_kwargs=True)
    prepared = []
    original = model.prepare_text
    monkeypatch.setattr(model, "prepare_text", lambda ctx: prepared.append(1) or original(ctx))
    try:
        _sample(tiny, steps=5)
        _sample(tiny, steps=5, integer_timesteps=False, batch_cfg=False)
    finally:
        hook.remove()
    sigmas = teacher_sigmas(5, SHIFT)
    batched, exact = calls[:5], calls[5:]
    assert len(prepared) == 4 and len(exact) == 10
    for (args, kwargs), s in zip(batched, sigmas.tolist()):
        x, t, text = args
        assert x.shape == (2, 48, FRAMES, H, W) and isinstance(text, TextContext)
        assert t.tolist() == [float(int(1000 * s))] * 2
        assert kwargs["reference"].shape == (2, 48, 1, H, W)
        assert torch.equal(kwargs["garment"][1], data["garment"][0])
    torch.testing.assert_close(
        torch.stack([args[1][0] for args, _ in exact[::2]]), (1000 * sigmas[:-1]).float(), atol=1e-4, rtol=0
    )


def test_text_context_input_equals_features(tiny):
    model, data = tiny
    with torch.no_grad():
        pos, neg = model.prepare_text(data["positive"]), model.prepare_text(data["negative"])
    assert torch.equal(_sample(tiny, positive=pos, negative=neg), _sample(tiny))


def test_bf16_model_keeps_fp32_state(tiny):
    model, data = tiny
    half = WanModel(model.config).to(torch.bfloat16)
    half.load_state_dict(model.state_dict())
    previews = []
    out = sample_teacher(half, **data, latent_frames=FRAMES, steps=3, callback=lambda i, n, x0: previews.append(x0))
    assert out.dtype == torch.float32 and all(p.dtype == torch.float32 for p in previews)
    torch.testing.assert_close(out, _sample(tiny, steps=3), atol=0.3, rtol=0.1)


def test_teacher_interrupt_and_progress(tiny):
    progress = []
    polls = iter([False, False, True])
    stopped = _sample(tiny, callback=lambda i, n, x0: progress.append((i, n)), should_stop=lambda: next(polls))
    assert progress == [(0, 4), (1, 4)]
    assert stopped.shape == (1, 48, FRAMES, H, W)
    assert not torch.allclose(stopped, _sample(tiny))  # a noisy intermediate, not the finished sample


def test_initial_noise_comes_from_a_cpu_generator():
    expected = torch.randn(2, 3, generator=torch.Generator().manual_seed(9))
    assert torch.equal(initial_noise((2, 3), 9, "cpu"), expected)


@pytest.mark.gpu
def test_same_seed_same_video_on_gpu(tiny, monkeypatch):
    model, data = tiny
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the patch-embedding conv would round to TF32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cpu = _sample(tiny, steps=3)
    gpu_model = WanModel(model.config).to("cuda")
    gpu_model.load_state_dict(model.state_dict())
    gpu = sample_teacher(gpu_model, **data, latent_frames=FRAMES, steps=3)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"sampler": "ddim"}, ValueError, r"unknown sampler 'ddim'; choose one of \['unipc', 'euler'\]"),
        ({"latent_frames": 0}, ValueError, "latent_frames must be >= 1, got 0"),
        ({"latent_frames": 2.0}, TypeError, "latent_frames must be an int"),
        ({"steps": 0}, ValueError, "steps must be >= 1, got 0"),
        ({"cfg": -1.0}, ValueError, "cfg must be a finite number >= 0, got -1.0"),
        ({"shift": 0.0}, ValueError, "shift must be"),
        ({"seed": -3}, ValueError, "seed must be >= 0"),
        ({"negative": None}, ValueError, "needs a negative prompt"),
        ({"garment": torch.zeros(1, 48, 1, H, 2 * W)}, ValueError, "same shape"),
        ({"reference": torch.zeros(1, 16, 1, H, W)}, ValueError, "16 latent channels but the model takes in_dim=48"),
        ({"reference": torch.zeros(1, 48, 2, H, W)}, ValueError, r"one model-space latent frame"),
        ({"reference": torch.zeros(1, 48, 1, 3, W)}, ValueError, "patch size"),
        ({"positive": torch.zeros(1, 4, 32)}, ValueError, "text_dim=64"),
        ({"positive": "a prompt"}, TypeError, "text-encoder features"),
    ],
)
def test_teacher_rejects_bad_input(tiny, overrides, error, match):
    with pytest.raises(error, match=match):
        _sample(tiny, **overrides)


def test_cfg_below_one_is_allowed(tiny):
    out = _sample(tiny, cfg=0.5, steps=2)
    assert torch.isfinite(out).all()
