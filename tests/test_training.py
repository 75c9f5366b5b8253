"""End-to-end training tests: prepare -> sft -> forcing as real processes (gloo, CPU, tiny model, 2 processes).

For each stage: the loss falls over 20 steps on a fixed batch; a 2-process run ends with the parameters of a
1-process run with the same global batch (to rounding); a run stopped after 7 steps and resumed from its checkpoint
ends with exactly the parameters of the uninterrupted run (resumed on 2 processes: to rounding); the export loads
through the checkpoint package with the right role.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chameleon_core.training.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]
STEPS = 20


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """In-process runs: tiny models gain nothing from intra-op threads, and on a busy 2-core machine spin-waits
    make them much slower (the subprocesses get OMP_NUM_THREADS=1 for the same reason)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], nproc: int = 1, timeout: float = 120) -> None:
    """``python -m chameleon_core.training ARGS`` as ``nproc`` processes with torchrun's environment variables."""
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "chameleon_core.training", "--log-level", "WARNING", *args]
    if nproc == 1:
        procs = [subprocess.Popen(cmd, cwd=REPO, env=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
    else:
        port = str(_free_port())
        procs = []
        for r in range(nproc):
            env = {**base, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(r), "LOCAL_RANK": str(r),
                   "WORLD_SIZE": str(nproc)}
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        outputs.append(out.decode(errors="replace"))
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, f"{' '.join(args)} failed (rc {p.returncode}):\n{out[-4000:]}"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    csv_path = write_dataset(root / "clips")
    out = root / "cache"
    launch(["prepare", "--csv", str(csv_path), "--out", str(out), "--vae", "random:wan2.2-tiny",
            "--text-encoder", "random:64", "--frames", "9", "--width", "32", "--height", "64", "--dtype", "fp32",
            "--device", "cpu"], nproc=2)
    return out


def _train(stage: str, cache: Path, out: Path, nproc: int, *extra: str) -> None:
    """Train a tiny stage: 2 processes through the command line, 1 process in this process (saves a start-up)."""
    overrides = [f"data.cache={cache}", f"run.out={out}", f"run.steps={STEPS}", "run.save_every=100",
                 "data.fixed_batch=true", "optim.lr=3e-4", *extra]
    if nproc > 1:
        launch([stage, "--config", f"tiny_{stage}", *[a for o in overrides for a in ("--set", o)]], nproc=nproc)
        return
    from chameleon_core.training.config import load_config
    from chameleon_core.training.stage_forcing import run_forcing
    from chameleon_core.training.stage_sft import run_sft

    cfg = load_config(f"tiny_{stage}", overrides)
    (run_sft if stage == "sft" else run_forcing)(cfg)


def _losses(run: Path) -> list[float]:
    from chameleon_core.training.metrics import read_metrics

    return [r["loss"] for r in read_metrics(run / "metrics.jsonl")]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("stage,kind", [("sft", "teacher"), ("forcing", "student")])
def test_stage(stage, kind, cache, tmp_path):
    from chameleon_core.checkpoints import checkpoint_kind, load_transformer
    from chameleon_core.training.config import load_config
    from chameleon_core.training.runtime import load_weights

    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    _train(stage, cache, one, 1)
    _train(stage, cache, two, 2)
    _train(stage, cache, killed, 1, "run.stop_after=7")
    assert not (killed / "export").exists(), "a stopped run must not export"
    _train(stage, cache, killed, 1)
    moved_on = tmp_path / "moved_on"  # stopped on 1 process (a checkpoint DCP wrote with no collectives), resumed on 2
    _train(stage, cache, moved_on, 1, "run.stop_after=7")
    _train(stage, cache, moved_on, 2)

    # 1. The loss falls over 20 steps on a fixed batch.
    losses = _losses(one)
    assert len(losses) == STEPS
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, f"{stage} loss did not fall: {losses}"

    export = f"export/{kind}.safetensors"
    p_one, p_two, p_killed = (load_file(str(r / export)) for r in (one, two, killed))
    cfg = load_config(f"tiny_{stage}")
    init = load_weights(cfg.model.init, cfg.model.arch).state_dict()
    moved = max(float((p_one[k] - init[k]).abs().max()) for k in p_one)
    assert moved > 1e-3
    # 2. Two processes, same global batch: the same parameters to rounding. Adam divides by sqrt(v), so a rounding
    # difference in a near-zero gradient can move a weight by a fraction of lr: allow 1% of the total movement.
    assert _max_diff(p_one, p_two) < 1e-2 * moved, (_max_diff(p_one, p_two), moved)
    # 3. Interrupted after 7 steps and resumed: the same parameters as uninterrupted; resumed on 2 processes, the
    # same to the rounding of 2.
    assert _max_diff(p_one, p_killed) <= 1e-6 * moved, _max_diff(p_one, p_killed)
    p_moved_on = load_file(str(moved_on / export))
    assert _max_diff(p_one, p_moved_on) < 1e-2 * moved, (_max_diff(p_one, p_moved_on), moved)
    # 4. The export reads back through the checkpoint package, in its role.
    assert checkpoint_kind(one / export) == kind
    model = load_transformer(one / export, dtype=torch.float32)
    assert all(torch.equal(v, p_one[k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_chain_sft_forcing_dmd_student_streams(cache, tmp_path):
    """prepare -> sft -> forcing (initialised from the SFT export) -> dmd (generator from the forcing student, real
    and fake scores from the SFT teacher) -> the DMD student streams through ``python -m chameleon_core``
    (in-process) straight from the exported file, with no conversion."""
    from chameleon_core.text import save_prompt_embeddings
    from chameleon_core.tools.tiny_checkpoints import write_images, write_vae
    from chameleon_core.tools import stream as stream_cli
    from chameleon_core.training.config import load_config
    from chameleon_core.checkpoints import checkpoint_kind
    from chameleon_core.training.stage_dmd import run_dmd
    from chameleon_core.training.stage_forcing import run_forcing
    from chameleon_core.training.stage_sft import run_sft

    common = [f"data.cache={cache}", "run.steps=2", "run.save_every=100"]
    run_sft(load_config("tiny_sft", [*common, f"run.out={tmp_path / 'sft'}"]))
    teacher = tmp_path / "sft" / "export" / "teacher.safetensors"
    run_forcing(load_config("tiny_forcing", [*common, f"run.out={tmp_path / 'forcing'}", f"model.init={teacher}"]))
    forced = tmp_path / "forcing" / "export" / "student.safetensors"
    run_dmd(load_config("tiny_dmd", [*common, f"run.out={tmp_path / 'dmd'}", f"model.init={forced}",
                                     f"dmd.teacher={teacher}", "dmd.critic_per_generator=1", "dmd.chunk_frames=1"]))
    student = tmp_path / "dmd" / "export" / "student.safetensors"
    assert checkpoint_kind(student) == "student"

    write_images(tmp_path, size=64)
    write_vae(tmp_path / "wan2.2_vae.safetensors", seed=0)
    prompt = save_prompt_embeddings(tmp_path / "prompt.safetensors", torch.randn(6, 64), "walks")
    args = {"--student": student, "--vae": tmp_path / "wan2.2_vae.safetensors", "--prompt-embeds": prompt,
            "--reference": tmp_path / "reference.png", "--garment": tmp_path / "garment1.png", "--width": 64,
            "--height": 64, "--frames": 9, "--chunk-frames": 1, "--out": tmp_path / "frames"}
    assert stream_cli.main([str(x) for kv in args.items() for x in kv]) == 0
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 9


@pytest.mark.slow
def test_unsharded_single_process_matches_fsdp(cache, tmp_path):
    """World size 1 without FSDP (plain fp32 module, no checkpointing) trains to the same weights as FSDP2 with
    per-block checkpointing: the sharding and recomputation change nothing numerically in fp32."""
    from chameleon_core.training.config import load_config
    from chameleon_core.training.stage_sft import run_sft

    common = [f"data.cache={cache}", "run.steps=3", "run.save_every=100", "data.fixed_batch=true"]
    run_sft(load_config("tiny_sft", [*common, f"run.out={tmp_path / 'fsdp'}"]))
    run_sft(load_config("tiny_sft", [*common, f"run.out={tmp_path / 'plain'}", "model.fsdp=false",
                                     "model.activation_checkpointing=false"]))
    a, b = (load_file(str(tmp_path / r / "export/teacher.safetensors")) for r in ("fsdp", "plain"))
    assert _max_diff(a, b) < 1e-5
