"""GR-DMD (training stage 3): rollout through the shared chunk step, DMD loss, reward weights, critic, EMA, reward."""

from __future__ import annotations

import itertools

import pytest
import torch

from chameleon_core.schedules import shifted_timestep_table
from chameleon_core.streaming import generate, start_stream
from tests.tiny_models import tiny_transformer
from chameleon_core.training import dmd
from chameleon_core.training.dmd import EMA, SampleRandom

C, H, W = 48, 4, 4  # tiny: Wan2.2 latents, 4x4 latent grid (2x2 tokens per frame)


def _inputs(batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, 5, 64, generator=g)
    reference = torch.randn(batch, C, 1, H, W, generator=g)
    garment = torch.randn(batch, C, 1, H, W, generator=g)
    return context, reference, garment


# ---------------------------------------------------------------------------------------------------------------
# Rollout
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grad", [False, True])
def test_rollout_with_last_exit_step_is_the_inference_stream(grad):
    """The rollout runs the inference chunk step: with the last exit step it reproduces ``generate`` exactly."""
    model = tiny_transformer(1)
    context, reference, garment = _inputs()
    settings = dmd.rollout_settings(2, 3, steps=3)
    seed = 1234
    out = dmd.rollout(
        model, context=context, reference=reference, garment=garment, settings=settings, num_chunks=3,
        exit_step=2, rng=SampleRandom([seed]), grad=grad,
    )
    assert out.shape == (1, C, 6, H, W)
    assert out.requires_grad == grad
    with torch.no_grad():  # an outer no_grad wins over grad=True
        assert not dmd.rollout(
            model, context=context, reference=reference, garment=garment, settings=settings, num_chunks=1,
            exit_step=0, rng=SampleRandom([seed]), grad=True,
        ).requires_grad
    state = start_stream(model, context=context, reference=reference, garment=garment, seed=seed, settings=settings)
    _, expected = generate(state, 6)
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-5)


def _record_passes(model):
    """Hook block 0: for every forward, whether it ran with gradient; tensors with gradient get a hook that marks
    when backward reaches them."""
    passes: list[dict] = []

    def hook(_module, _inputs, output):
        entry = {"grad": torch.is_grad_enabled() and output.requires_grad, "reached": False}
        passes.append(entry)
        if entry["grad"]:
            output.register_hook(lambda g: entry.__setitem__("reached", bool(g.abs().sum() > 0)))

    return passes, model.blocks[0].register_forward_hook(hook)


@pytest.mark.parametrize("exit_step", [0, 1, 2])
def test_rollout_gradient_reaches_only_the_exit_step_of_its_own_chunk(exit_step):
    model = tiny_transformer(2)
    context, reference, garment = _inputs()
    chunks, steps = 3, 3
    passes, handle = _record_passes(model)
    out = dmd.rollout(
        model, context=context, reference=reference, garment=garment,
        settings=dmd.rollout_settings(1, chunks, steps=steps), num_chunks=chunks, exit_step=exit_step,
        rng=SampleRandom([7]),
    )
    handle.remove()
    # Pass order: the condition prefill, then per chunk: steps 0..exit, the clean pass. Only exit steps have a graph.
    per_chunk = [False] * exit_step + [True] + [False]
    assert [p["grad"] for p in passes] == [False] + per_chunk * chunks
    # A loss on the middle chunk reaches that chunk's exit pass and nothing else (no gradient across chunks).
    out[:, :, 1].square().sum().backward()
    reached = [i for i, p in enumerate(passes) if p["reached"]]
    assert reached == [1 + len(per_chunk) + exit_step]
    assert model.blocks[0].self_attn.q.weight.grad.abs().sum() > 0
    assert model.text_embedding[0].weight.grad.abs().sum() > 0  # the prompt embedding trains too


def test_rollout_output_is_the_exit_step_x0():
    """Exit step 0 of a 3-step schedule returns the first step's x0: a 1-step stream with the same noise (both
    start at t = 1000, and the clean pass writes that x0), so later chunks see the same history too."""
    model = tiny_transformer(3)
    context, reference, garment = _inputs()
    out = dmd.rollout(
        model, context=context, reference=reference, garment=garment, settings=dmd.rollout_settings(2, 2, steps=3),
        num_chunks=2, exit_step=0, rng=SampleRandom([5]),
    )
    settings = dmd.rollout_settings(2, 2, steps=1)
    state = start_stream(model, context=context, reference=reference, garment=garment, seed=5, settings=settings)
    _, expected = generate(state, 4)
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-5)


def test_exit_step_is_shared_and_reproducible():
    draws = [dmd.draw_exit_step(4, seed=3, step=s) for s in range(200)]
    assert draws == [dmd.draw_exit_step(4, seed=3, step=s) for s in range(200)]  # same on every rank / resume
    assert set(draws) == {0, 1, 2, 3}
    assert draws != [dmd.draw_exit_step(4, seed=4, step=s) for s in range(200)]


def test_sample_random_depends_on_the_global_index_not_the_split():
    both = SampleRandom.for_samples(9, "noise", 3, [0, 1]).normal(2, 3)
    one = SampleRandom.for_samples(9, "noise", 3, [1]).normal(2, 3)
    torch.testing.assert_close(both[1:], one)


def test_timesteps_follow_the_shifted_table_and_clamp():
    t = dmd.sample_timesteps(SampleRandom(list(range(4000))))
    table = shifted_timestep_table(5.0)
    assert t.min() >= 20 and t.max() <= 980
    inside = t[(t > 20) & (t < 980)]
    assert torch.isin(inside, table).all()
    assert (t == 980).float().mean() > 0.05  # shift 5 piles mass near 1000, which the clamp collects


def test_timestep_sampling_honours_the_config():
    sampling = dmd.TimestepSampling(shift=3.0, min_t=100.0, max_t=900.0, quantize=False)
    t = sampling.sample(SampleRandom(list(range(500))))
    assert t.min() >= 100 and t.max() <= 900 and (t == 900).any() and (t == 100).any()
    exact = torch.tensor([937.5, 500.25])
    torch.testing.assert_close(sampling.fed(exact, torch.bfloat16, "cpu"), exact)
    assert dmd.TimestepSampling().fed(exact, torch.bfloat16, "cpu").tolist() == [936.0, 500.0]


# ---------------------------------------------------------------------------------------------------------------
# DMD gradient and loss
# ---------------------------------------------------------------------------------------------------------------


def test_dmd_gradient_normalises_per_sample_and_guards_zero():
    g = torch.Generator().manual_seed(0)
    x, real, fake = (torch.randn(2, 3, 4, 2, 2, generator=g) for _ in range(3))
    grad = dmd.dmd_gradient(x, real, fake)
    for i in range(2):
        torch.testing.assert_close(grad[i], (fake[i] - real[i]) / (x[i] - real[i]).abs().mean())
    assert torch.isfinite(dmd.dmd_gradient(real, real, fake)).all()


def test_dmd_loss_uniform_weights_is_the_plain_loss_and_its_gradient_is_grad():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 2, 2, generator=g, requires_grad=True)
    grad = torch.randn(2, 3, 4, 2, 2, generator=g)
    loss = dmd.dmd_loss(x, grad)
    plain = 0.5 * ((x - (x - grad).detach()) ** 2).mean()
    torch.testing.assert_close(loss, plain)
    loss.backward()
    torch.testing.assert_close(x.grad, grad / grad.numel())  # the DMD update direction, scaled


def test_reward_weights_limits_and_order():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 6, 2, 2, generator=g, requires_grad=True)
    grad = torch.randn(2, 3, 6, 2, 2, generator=g)
    rewards = torch.randn(2, 6, generator=g)
    plain = dmd.dmd_loss(x, grad)
    # tau -> infinity: uniform weights, the unweighted DMD loss.
    torch.testing.assert_close(dmd.dmd_loss(x, grad, dmd.reward_weights(rewards, tau=1e9)), plain)
    # Equal rewards: the plain mean, at the paper's tau.
    torch.testing.assert_close(dmd.dmd_loss(x, grad, dmd.reward_weights(torch.full((2, 6), 3.7))), plain)
    # Lower reward -> more weight; rows sum to one.
    a = dmd.reward_weights(torch.tensor([[0.0, 1.0, 2.0]]))
    assert a[0, 0] > a[0, 1] > a[0, 2]
    torch.testing.assert_close(a.sum(dim=1), torch.ones(1))
    torch.testing.assert_close(a, torch.softmax(torch.tensor([[0.0, 1.0, 2.0]]) / -0.2, dim=1))
    # Weighted: frame f's gradient scales with A_f (and the weights carry no gradient).
    w = dmd.reward_weights(rewards)
    x.grad = None
    dmd.dmd_loss(x, grad, w).backward()
    n = 3 * 2 * 2
    torch.testing.assert_close(x.grad, grad * (w / n / 2)[:, None, :, None, None])


def test_real_score_uses_cfg_3_on_x0_with_the_negative_prompt():
    teacher = tiny_transformer(4)
    context, reference, garment = _inputs(2)
    negative = torch.randn(1, 3, 64)
    x_t = torch.randn(2, C, 2, H, W)
    t = torch.tensor([500.0, 937.5])
    real = dmd.real_x0(teacher, x_t, t, positive=context, negative=negative, reference=reference, garment=garment)
    with torch.no_grad():
        sigma = (t / 1000).view(2, 1, 1, 1, 1)
        fed = torch.tensor([500.0, 937.0])  # what the DiT sees: truncated, as the authors feed it
        cond = x_t - sigma * teacher(x_t, fed, context, reference=reference, garment=garment)
        uncond = x_t - sigma * teacher(x_t, fed, negative.expand(2, -1, -1), reference=reference, garment=garment)
    torch.testing.assert_close(real, cond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-4)


def test_generator_loss_has_gradient_only_through_x():
    teacher, critic = tiny_transformer(4), tiny_transformer(5)
    context, reference, garment = _inputs(1)
    x = torch.randn(1, C, 2, H, W, requires_grad=True)
    terms = dmd.generator_loss(
        x, teacher=teacher, critic=critic, positive=context, negative=torch.zeros(1, 1, 64), reference=reference,
        garment=garment, rng=SampleRandom([1]),
    )
    terms.loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in critic.parameters())
    assert 20 <= float(terms.timesteps) <= 980


# ---------------------------------------------------------------------------------------------------------------
# Reward weights from decoded frames
# ---------------------------------------------------------------------------------------------------------------


def test_frame_rewards_fold_pixel_frames_onto_latent_frames_and_chunks():
    latents = torch.zeros(2, C, 4, H, W)

    def decode(z):  # pixel frame j is filled with j (+ 100 for the second sample) -> brightness j
        b, _, f = z.shape[:3]
        n = 1 + 4 * (f - 1)
        return torch.arange(n, dtype=torch.float32).view(1, 1, n, 1, 1).expand(b, 3, n, 8, 8).clone()

    def reward(frames):
        return frames.mean(dim=(1, 2, 3))

    per_latent = torch.tensor([0.0, 2.5, 6.5, 10.5])  # frame 0; then means of 1-4, 5-8, 9-12
    got = dmd.frame_rewards(latents, decode=decode, reward=reward, chunk_frames=1)
    torch.testing.assert_close(got, per_latent.expand(2, 4))
    got = dmd.frame_rewards(latents, decode=decode, reward=reward, chunk_frames=2)
    torch.testing.assert_close(got, torch.tensor([1.25, 1.25, 8.5, 8.5]).expand(2, 4))
    got = dmd.frame_rewards(latents, decode=decode, reward=reward, chunk_frames=3)  # short last chunk
    torch.testing.assert_close(got, torch.tensor([3.0, 3.0, 3.0, 10.5]).expand(2, 4))


def test_frame_rewards_through_the_tiny_vae():
    from chameleon_core.training.reward import brightness_reward
    from chameleon_core.vae import build_vae

    vae = build_vae("wan2.2-tiny", seed=0)
    latents = torch.randn(1, C, 3, 2, 2)
    decode = dmd.vae_decoder(vae)
    r = dmd.frame_rewards(latents, decode=decode, reward=brightness_reward, chunk_frames=3)
    pixels = decode(latents)
    assert pixels.shape == (1, 3, 9, 32, 32)
    per_pixel = pixels.mean(dim=(1, 3, 4))[0]  # [9] brightness of each pixel frame
    folded = torch.stack([per_pixel[0], per_pixel[1:5].mean(), per_pixel[5:9].mean()]).mean()  # one 3-frame chunk
    torch.testing.assert_close(r, folded.expand(1, 3))


# ---------------------------------------------------------------------------------------------------------------
# Critic and EMA
# ---------------------------------------------------------------------------------------------------------------


def test_critic_loss_is_flow_matching_on_generated_latents():
    critic = tiny_transformer(6)
    context, reference, garment = _inputs(1)
    x_gen = torch.randn(1, C, 2, H, W, requires_grad=True)
    loss = dmd.critic_loss(critic, x_gen, context=context, reference=reference, garment=garment,
                           rng=SampleRandom([11]))
    rng = SampleRandom([11])
    t = dmd.sample_timesteps(rng)
    eps = rng.normal(C, 2, H, W)
    s = float(t) / 1000
    with torch.no_grad():
        v = critic((1 - s) * x_gen + s * eps, t.float().long().float(), context, reference=reference, garment=garment)
    torch.testing.assert_close(loss.detach(), ((v - (eps - x_gen)) ** 2).mean(), rtol=1e-5, atol=1e-6)
    loss.backward()
    assert x_gen.grad is None
    assert critic.head.head.weight.grad.abs().sum() > 0


def test_ema_follows_until_start_then_averages_in_fp32_and_round_trips():
    lin = torch.nn.Linear(3, 2).to(torch.bfloat16)
    ema = EMA(lin, decay=0.9, start_step=2)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin, step=1)  # before the start: a copy
    torch.testing.assert_close(ema.shadow["weight"], torch.ones(2, 3))
    assert ema.shadow["weight"].dtype == torch.float32
    with torch.no_grad():
        lin.weight.fill_(2.0)
    ema.update(lin, step=2)
    torch.testing.assert_close(ema.shadow["weight"], torch.full((2, 3), 1.1))
    other = EMA(lin, decay=0.9, start_step=2)
    other.load_state_dict(ema.state_dict())
    torch.testing.assert_close(other.full_state_dict(lin)["weight"], torch.full((2, 3), 1.1))
    with pytest.raises(KeyError, match="shadow.bias"):
        other.load_state_dict({"shadow.weight": torch.zeros(2, 3)})


# ---------------------------------------------------------------------------------------------------------------
# Aesthetic reward
# ---------------------------------------------------------------------------------------------------------------


def _mlp_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the released predictor's key layout (``layers.{0,2,4,6,7}``)."""
    g = torch.Generator().manual_seed(seed)
    widths = (768, 1024, 128, 64, 16, 1)
    state = {}
    for idx, (a, b) in zip((0, 2, 4, 6, 7), itertools.pairwise(widths)):
        state[f"layers.{idx}.weight"] = torch.randn(b, a, generator=g) / a**0.5
        state[f"layers.{idx}.bias"] = torch.randn(b, generator=g) * 0.1
    return state


def _mlp_reference(state, x):
    for idx in (0, 2, 4, 6, 7):  # no activations between the linear layers
        x = x @ state[f"layers.{idx}.weight"].T + state[f"layers.{idx}.bias"]
    return x.squeeze(-1)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_aesthetic_mlp_loads_the_released_layout(tmp_path, suffix):
    from safetensors.torch import save_file

    from chameleon_core.training.reward import load_aesthetic_mlp

    state = _mlp_state()
    path = tmp_path / f"aesthetic{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    mlp = load_aesthetic_mlp(path)
    x = torch.nn.functional.normalize(torch.randn(5, 768), dim=-1)
    torch.testing.assert_close(mlp(x), _mlp_reference(state, x), rtol=1e-5, atol=1e-5)


def test_aesthetic_mlp_errors_name_the_problem(tmp_path):
    from safetensors.torch import save_file

    from chameleon_core.training.reward import load_aesthetic_mlp

    with pytest.raises(FileNotFoundError, match="aesthetic MLP file not found"):
        load_aesthetic_mlp(tmp_path / "missing.pth")
    bad = {k.replace("layers.7", "layers.8"): v for k, v in _mlp_state().items()}
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="missing .*layers.7.bias"):
        load_aesthetic_mlp(tmp_path / "bad.safetensors")
    wrong = _mlp_state()
    wrong["layers.0.weight"] = torch.zeros(1024, 512)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match=r"layers.0.weight has shape \(1024, 512\)"):
        load_aesthetic_mlp(tmp_path / "wrong.safetensors")


def test_aesthetic_reward_with_a_tiny_clip_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    from chameleon_core.training.reward import clip_preprocess, load_aesthetic_reward

    config = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=224,
        patch_size=32, projection_dim=768,
    )
    torch.manual_seed(0)
    transformers.CLIPVisionModelWithProjection(config).save_pretrained(tmp_path / "clip")
    state = _mlp_state(1)
    save_file(state, str(tmp_path / "mlp.safetensors"))
    reward = load_aesthetic_reward(tmp_path / "mlp.safetensors", tmp_path / "clip")
    frames = torch.rand(3, 3, 64, 48) * 2 - 1
    scores = reward(frames)
    assert scores.shape == (3,)
    clip = transformers.CLIPVisionModelWithProjection.from_pretrained(tmp_path / "clip").eval()
    with torch.no_grad():
        emb = clip(pixel_values=clip_preprocess(frames)).image_embeds
    torch.testing.assert_close(scores, _mlp_reference(state, torch.nn.functional.normalize(emb, dim=-1)),
                               rtol=1e-4, atol=1e-4)
    assert clip_preprocess(frames).shape == (3, 3, 224, 224)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_aesthetic_reward(tmp_path / "mlp.safetensors", tmp_path)
    # A stage config names the folder: one MLP file beside the CLIP folder.
    from chameleon_core.training.reward import brightness_reward, reward_from_spec

    torch.testing.assert_close(reward_from_spec(str(tmp_path))(frames), scores)
    assert reward_from_spec("none") is None and reward_from_spec("brightness") is brightness_reward
    save_file(state, str(tmp_path / "second.safetensors"))
    with pytest.raises(ValueError, match="found 2 MLP file"):
        reward_from_spec(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="reward folder not found"):
        reward_from_spec(str(tmp_path / "nowhere"))


def test_rollout_gradients_survive_activation_checkpointing():
    """The generator trains with per-block checkpointing: recomputing the exit step in backward (the cache has been
    rewritten by the clean pass and later chunks by then) gives the same parameter gradients."""
    from chameleon_core.training.parallel import CheckpointedBlock

    context, reference, garment = _inputs()
    grads = []
    for checkpointed in (False, True):
        model = tiny_transformer(8).train()
        if checkpointed:
            for block in model.blocks:
                block.__class__ = CheckpointedBlock
        out = dmd.rollout(
            model, context=context, reference=reference, garment=garment, settings=dmd.rollout_settings(1, 3, steps=2),
            num_chunks=3, exit_step=1, rng=SampleRandom([3]),
        )
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


# ---------------------------------------------------------------------------------------------------------------
# The stage: 1 process vs 2 processes, interrupted + resumed vs uninterrupted
# ---------------------------------------------------------------------------------------------------------------

def _write_latent_cache(root, items: int = 4, frames: int = 2):
    """A latent cache in ``prepare``'s format: 32x32 videos of ``frames`` latent frames, umT5-like features."""
    import json

    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(42)
    (root / "items").mkdir(parents=True)
    entries = []
    for i in range(items):
        tensors = {
            "video": torch.randn(C, frames, 2, 2, generator=g),
            "reference": torch.randn(C, 1, 2, 2, generator=g),
            "garment": torch.randn(C, 1, 2, 2, generator=g),
            "text_dynamic": torch.randn(3, 64, generator=g),
            "text_full": torch.randn(5, 64, generator=g),
            "text_empty": torch.randn(1, 64, generator=g),
        }
        save_file(tensors, str(root / "items" / f"v{i}.safetensors"))
        entries.append({"key": f"v{i}", "file": f"items/v{i}.safetensors", "width": 32, "height": 32,
                        "frames": 4 * (frames - 1) + 1, "latent_shape": [C, frames, 2, 2]})
    (root / "manifest.json").write_text(json.dumps({"items": entries, "vae": "random:wan2.2-tiny"}))
    return root


def _stage_config(cache, out, **run):
    from chameleon_core.training.config import load_config

    cfg = load_config("tiny_dmd").to_dict()
    cfg["data"].update(cache=str(cache), batch_size=2)
    cfg["dmd"].update(critic_per_generator=2, ema_start=2, chunk_frames=1, denoise_steps=2)
    cfg["run"].update(out=str(out), steps=4, save_every=100, log_every=1, **run)
    return cfg


def _run_stage(cfg: dict, processes: int = 1) -> None:
    """Run the stage through the command line, as a user does: one process, or ``torchrun`` on gloo."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    config = Path(cfg["run"]["out"] + f".{cfg['run'].get('stop_after')}.json")
    config.write_text(json.dumps(cfg))
    command = ["-m", "chameleon_core.training", "--log-level", "WARNING", "dmd", "--config", str(config)]
    if processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(processes),
                   "--master_addr", "127.0.0.1", "--master_port", str(port), *command]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *command], check=False, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"dmd stage failed:\n{(done.stdout + done.stderr)[-4000:]}"


_STATES: dict = {}


def _final_state(out):
    """Every tensor of the run's latest checkpoint (models, optimisers, EMA), as one flat dict (read once)."""
    if out in _STATES:
        return _STATES[out]
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    latest = (out / "checkpoints" / "latest").read_text().strip()
    flat_file = out / "flat.pt"
    dcp_to_torch_save(str(out / "checkpoints" / latest / "dcp"), str(flat_file))
    state = torch.load(flat_file, weights_only=True)

    def walk(prefix, node, acc):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v, acc)
        elif isinstance(node, torch.Tensor):
            acc[prefix[:-1]] = node
        return acc

    _STATES[out] = walk("", state, {})
    return _STATES[out]


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory):
    """Tiny GR-DMD runs of 4 iterations (generator updates at 0 and 2, EMA from 2) with a global batch of 2: one
    process; two processes; one process in micro-batches of 1; one process stopped after 1 iteration and resumed."""
    root = tmp_path_factory.mktemp("dmd")
    cache = _write_latent_cache(root / "cache")
    runs = {"one": root / "one", "two": root / "two", "micro": root / "micro", "resumed": root / "resumed"}
    _run_stage(_stage_config(cache, runs["one"]))
    _run_stage(_stage_config(cache, runs["two"]), processes=2)
    micro = _stage_config(cache, runs["micro"])
    micro["data"]["micro_batch"] = 1
    _run_stage(micro)
    _run_stage(_stage_config(cache, runs["resumed"], stop_after=1))
    _run_stage(_stage_config(cache, runs["resumed"]))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("other", ["two", "micro"])
def test_dmd_stage_two_processes_or_micro_batches_equal_one(stage_runs, other):
    one, two = _final_state(stage_runs["one"]), _final_state(stage_runs[other])
    assert set(one) == set(two)
    assert any(k.startswith("generator_ema.") for k in one) and any(k.startswith("critic.optim") for k in one)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_dmd_stage_resume_equals_uninterrupted(stage_runs):
    one, resumed = _final_state(stage_runs["one"]), _final_state(stage_runs["resumed"])
    assert set(one) == set(resumed)
    for k in one:
        torch.testing.assert_close(resumed[k], one[k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_dmd_stage_trains_logs_and_exports_a_student(stage_runs):
    from chameleon_core.checkpoints import checkpoint_kind, load_transformer
    from chameleon_core.training.metrics import read_metrics

    out = stage_runs["one"]
    (metrics,) = out.glob("metrics*.jsonl")
    records = read_metrics(metrics)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"generator_loss", "critic_loss", "exit_step", "reward", "generator_grad_norm"} <= set(records[0])
    assert "generator_loss" not in records[1] and "generator_loss" in records[2]
    for key in ("critic_loss", "critic_grad_norm", "seconds_per_step", "samples_per_second"):
        assert all(key in r for r in records)
    state = _final_state(out)
    gen = {k[len("generator.model."):]: v for k, v in state.items() if k.startswith("generator.model.")}
    ema = {k[len("generator_ema.model."):]: v for k, v in state.items() if k.startswith("generator_ema.model.")}
    start = tiny_transformer(0).state_dict()  # the preset's generator init is random:0
    assert any(not torch.equal(gen[k], start[k]) for k in gen)  # the generator moved
    # The EMA lives in a sharded module's local shards: it followed the generator at iteration 0 (so it left the
    # initial weights) and averaged from iteration 2 (so it differs from the generator).
    assert any(not torch.equal(ema[k], start[k]) for k in gen)
    assert any(not torch.equal(ema[k], gen[k]) for k in gen)
    student = out / "export" / "student.safetensors"
    assert student.is_file()
    assert checkpoint_kind(student) == "student"
    model = load_transformer(student, dtype=torch.float32)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ema[k], msg=k)


@pytest.mark.slow
def test_dmd_stage_critic_learns_on_a_fixed_batch(tmp_path):
    """20 iterations on one fixed batch: the critic's flow loss (fresh rollouts, random timesteps, so noisy) falls
    on average from the first five iterations to the last five. This run reads the VAE and the negative prompt
    from files, as a real run does."""
    from safetensors.torch import save_file

    from chameleon_core.text import save_prompt_embeddings
    from chameleon_core.training.metrics import read_metrics
    from chameleon_core.vae import build_vae

    cache = _write_latent_cache(tmp_path / "cache")
    save_file({k: v.contiguous() for k, v in build_vae("wan2.2-tiny", seed=3).model.state_dict().items()},
              str(tmp_path / "vae.safetensors"))
    save_prompt_embeddings(tmp_path / "negative.safetensors", torch.randn(4, 64), "blurry, static")
    cfg = _stage_config(cache, tmp_path / "run")
    cfg["data"]["fixed_batch"] = True
    cfg["dmd"]["critic_lr"] = 1e-3
    cfg["dmd"]["extra"] = {"vae": str(tmp_path / "vae.safetensors"), "negative": str(tmp_path / "negative.safetensors")}
    cfg["run"].update(steps=20, export=False)
    _run_stage(cfg)
    (metrics,) = (tmp_path / "run").glob("metrics*.jsonl")
    losses = [r["critic_loss"] for r in read_metrics(metrics)]
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses


def test_dmd_self_references_are_the_generators_redrawn_frames(tmp_path):
    """``dmd.self_reference``: the iteration's batch carries references re-drawn by the generator as a switch makes
    them (the same function teacher forcing's option uses, computed here by hand), the batch itself at 0; a run
    with every reference self-made trains and exports; a probability without a VAE names the setting."""
    import dataclasses

    from chameleon_core.training.config import config_from_dict
    from chameleon_core.training.runtime import Run
    from chameleon_core.training.self_reference import redrawn_references
    from chameleon_core.training.stage_dmd import DMDTrainer

    cache = _write_latent_cache(tmp_path / "cache")
    base = _stage_config(cache, tmp_path / "run")
    base["run"]["steps"] = 2
    base["dmd"].update(self_reference=1.0, self_reference_vae="random:wan2.2-tiny")
    run = Run.start(config_from_dict(base))
    try:
        trainer = DMDTrainer(run)
        batch = trainer.loader.next(0)
        made = trainer._self_referenced(batch, 0)
        want = redrawn_references(trainer.generator, batch, 0, probability=1.0, vae="random:wan2.2-tiny",
                                  chunk_frames=1, shift=run.cfg.flow.shift, seed=run.cfg.run.seed, setting="x")
        torch.testing.assert_close(made.reference, want)
        assert not torch.allclose(made.reference, batch.reference)
        assert torch.equal(made.video, batch.video) and made.slots == batch.slots
        trainer.d = dataclasses.replace(trainer.d, self_reference=0.0)
        assert trainer._self_referenced(batch, 0) is batch
        trainer.d = dataclasses.replace(trainer.d, self_reference=1.0)
        assert trainer.train() is not None
    finally:
        run.close()
    assert (tmp_path / "run" / "export" / "student.safetensors").is_file()
    base["dmd"]["self_reference_vae"] = None
    base["run"]["out"] = str(tmp_path / "run2")
    run = Run.start(config_from_dict(base))
    try:
        with pytest.raises(ValueError, match="dmd.self_reference_vae"):
            DMDTrainer(run).train()
    finally:
        run.close()
