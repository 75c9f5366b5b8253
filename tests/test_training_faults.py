"""Faults on a 2-process gloo job (real processes, CPU, tiny model): each ends the whole job within seconds.

One dataset in the authors' layout with long and short captions, two aspect ratios and clips longer than needed,
prepared once by 2 processes. Then one job per kind of fault, each checking every process's exit code, the time to
exit and the message (printed once, by the process that failed, with its rank, stage and step):

- a damaged cache item read by rank 1 only;
- a prompt longer than the model's text length (a cache prepared for a longer model);
- a NaN loss on rank 1 (the documented policy: stop before the update, naming the step and the batch items);
- rank 1 killed mid-step (SIGKILL): rank 0 exits, it does not hang;
- rank 1 frozen (SIGSTOP): rank 0 notices the missing heartbeat and exits (the path that ends an NCCL job);
- a full disk while saving (ENOSPC injected in the background DCP writer of rank 1): the previous checkpoint stays
  the resume point, and the run resumes from it;

and, last, the whole recipe on that dataset: prepare, sft, forcing and dmd on 2 processes, the exported student
streaming through ``python -m chameleon_core``.

Processes are started as torchrun would start them (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``), but
without torchrun's agent, which would kill the survivors by itself: here only the pack's own fault handling ends them.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow  # every case runs training processes (seconds each): not in the fast subset

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "tests" / "training_fault_harness.py"
EXIT_LIMIT_S = 60.0
LONG = ("the model walks slowly along a sunlit street then turns toward the camera lifts one arm smiles and keeps "
        "walking past shop windows while the wind moves her hair and the fabric of her dress sways gently with "
        "every step she takes")


# -------------------------------------------------------------------------------------------------------------------
# Launching a job
# -------------------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    procs: list[subprocess.Popen]
    logs: list[Path]
    started: float

    def wait(self, timeout: float = 150.0) -> tuple[list[int], list[float]]:
        """Exit codes and each process's seconds from the start; kills the job (and fails) past ``timeout``."""
        codes, times = [None] * len(self.procs), [0.0] * len(self.procs)
        deadline = self.started + timeout
        while any(c is None for c in codes):
            for i, p in enumerate(self.procs):
                if codes[i] is None and p.poll() is not None:
                    codes[i], times[i] = p.returncode, time.monotonic() - self.started
            if time.monotonic() > deadline:
                for p in self.procs:
                    p.kill()
                pytest.fail(f"the job hung: still running after {timeout:.0f} s\n{self.output()[-3000:]}")
            time.sleep(0.05)
        return codes, times

    def text(self, rank: int) -> str:
        return self.logs[rank].read_text(errors="replace")

    def output(self) -> str:
        return "\n".join(f"--- rank {r} ---\n{self.text(r)}" for r in range(len(self.logs)))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], logdir: Path, *, nproc: int = 2, fault: str = "none", env: dict | None = None) -> Job:
    """``python tests/training_fault_harness.py FAULT ARGS`` as ``nproc`` processes with torchrun's variables."""
    logdir.mkdir(parents=True, exist_ok=True)
    port = str(_port())
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    procs, logs = [], []
    started = time.monotonic()
    for r in range(nproc):
        log = logdir / f"rank{r}.log"
        rank_env = {**base, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(nproc),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        with log.open("w") as f:
            procs.append(subprocess.Popen([sys.executable, str(HARNESS), fault, *args], cwd=REPO, env=rank_env,
                                          stdout=f, stderr=subprocess.STDOUT))
        logs.append(log)
    return Job(procs, logs, started)


def train_args(stage: str, cache: Path, out: Path, *sets: str) -> list[str]:
    overrides = [f"data.cache={cache}", f"run.out={out}", "run.save_every=1000", *sets]
    return ["--log-level", "INFO", stage, "--config", f"tiny_{stage}", *[a for o in overrides for a in ("--set", o)]]


# -------------------------------------------------------------------------------------------------------------------
# The dataset: authors' layout, long and short captions, two aspect ratios, clips longer than needed
# -------------------------------------------------------------------------------------------------------------------

FRAMES, WIDTH, HEIGHT, TEXT_LEN = 9, 32, 64, 16


def write_dataset(root: Path) -> Path:
    from chameleon_core.training.synthetic import write_video

    root.mkdir(parents=True)
    rows = []
    for i in range(8):
        portrait = i < 4
        w, h = (48, 64) if portrait else (64, 48)
        frames = FRAMES + 8 * (i % 2)  # every other clip is longer than needed
        write_video(root / f"clip{i}.mp4", frames, w, h, seed=i)
        rng = np.random.default_rng(100 + i)
        Image.fromarray(rng.integers(0, 255, (h + 16, w, 3), dtype=np.uint8)).save(root / f"clip{i}_src.png")
        Image.fromarray(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8)).save(root / f"clip{i}_cloth.png")
        dynamic = LONG if i % 3 == 0 else f"a person turns {i}"
        caption = {"en_long": [dynamic, "wearing a red shirt" if i % 2 else LONG], "cn_short": ["x", "y"]}
        rows.append({"video": f"clip{i}.mp4", "prompt": json.dumps(caption), "width": w, "height": h})
    path = root / "train.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "prompt", "width", "height"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The dataset prepared by 2 processes, captions cut to the tiny model's 16 tokens."""
    root = tmp_path_factory.mktemp("faults")
    csv_path = write_dataset(root / "data")
    out = root / "cache"
    job = start(["--log-level", "INFO", "prepare", "--csv", str(csv_path), "--out", str(out), "--vae",
                 "random:wan2.2-tiny", "--text-encoder", "random:64", "--frames", str(FRAMES), "--width", str(WIDTH),
                 "--height", str(HEIGHT), "--text-len", str(TEXT_LEN), "--dtype", "fp32", "--device", "cpu"],
                root / "prepare_logs")
    codes, _ = job.wait()
    assert codes == [0, 0], job.output()
    assert "captions were longer than 16 tokens and were cut" in job.text(0)
    return out


def test_prepare_cuts_long_captions_and_records_them(cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    items = manifest["items"]
    assert len(items) == 8 and {(i["width"], i["height"]) for i in items} == {(32, 64), (64, 32)}
    # Every long caption is cut to 16 tokens (15 words + end token); the short ones keep their length.
    cut = {(i["key"], v) for i in items for v in i["text_truncated"]}
    assert manifest["text_len"] == TEXT_LEN and manifest["truncated_captions"] == len(cut) > 0
    for i in items:
        assert max(i["text_tokens"].values()) <= TEXT_LEN
        for v in ("dynamic", "full"):
            assert ((i["key"], v) in cut) == (i["text_tokens"][v] == TEXT_LEN), (i["key"], v, i["text_tokens"])
    assert [i["latent_shape"][1] for i in items] == [3] * 8  # 9 frames used, also from the 17-frame clips


# -------------------------------------------------------------------------------------------------------------------
# Faults
# -------------------------------------------------------------------------------------------------------------------


def _copy_cache(cache: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(cache, dest)
    return dest


def _rank1_item_at_step1(cache: Path) -> Path:
    """The cache item rank 1 reads at step 1 (tiny preset: global batch 2, seed 0, one sample per process)."""
    from chameleon_core.training.latent_cache import BucketSampler, LatentCache

    c = LatentCache(cache)
    first = BucketSampler([i.bucket for i in c.items], 2, seed=0).next()
    return cache / c.items[first[1]].file


def _fill_tensor_with_nan(path: Path, name: str) -> None:
    """Overwrite one tensor's bytes of a safetensors file with all-ones bits (NaN in every float format)."""
    raw = bytearray(path.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    start, end = json.loads(raw[8 : 8 + header_len])[name]["data_offsets"]
    base = 8 + header_len
    raw[base + start : base + end] = b"\xff" * (end - start)
    path.write_bytes(bytes(raw))


def _assert_once(job: Job, rank: int, *parts: str) -> str:
    """The failure line is printed by ``rank`` and by no other process, once; returns it."""
    lines = [ln for ln in job.text(rank).splitlines() if f"failed on rank {rank} of 2" in ln]
    assert len(lines) == 1, job.output()
    for part in parts:
        assert part in lines[0], (part, job.output())
    others = [r for r in range(2) if r != rank]
    assert all("failed on rank" not in job.text(r) for r in others), job.output()
    assert "Traceback" not in job.output(), job.output()
    return lines[0]


def test_damaged_cache_item_on_one_rank(cache, tmp_path):
    damaged = _copy_cache(cache, tmp_path / "cache")
    item = _rank1_item_at_step1(damaged)
    # Damaged inside its data, the size and header sound: the checks before training (headers only, every rank)
    # pass, and the rank that reads it at step 1 finds it. (A truncated item is refused before training starts:
    # tests/test_fault_injection_commands.py.)
    _fill_tensor_with_nan(item, "video")
    job = start(train_args("sft", damaged, tmp_path / "run", "run.steps=4"), tmp_path / "logs")
    codes, times = job.wait()
    assert codes == [2, 2] and max(times) < EXIT_LIMIT_S, (codes, times, job.output())
    line = _assert_once(job, 1, "sft failed on rank 1 of 2 at step 1 of 4", str(item), "rerun prepare")
    # rank 0 names where rank 1 failed; where rank 0 itself was when it heard depends on timing (under load it may
    # not have left setup yet: its first step's collective is where it waits for rank 1)
    assert re.search(r"rank 0 \(sft at (setup|step 1 of 4)\): stopping: rank 1 failed \(sft at step 1 of 4\)",
                     job.text(0)), job.text(0)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["failed"] and record["rank"] == 1 and record["where"] == "step 1 of 4", (record, line)


def test_prompt_longer_than_the_model_takes(cache, tmp_path):
    """The cache holds 16-token prompts; a model with text_len 8 is refused before training, on both processes
    alike (rank 0 prints it), naming the longest items and the fix."""
    job = start(train_args("sft", cache, tmp_path / "run", "run.steps=4", "model.text_len=8"), tmp_path / "logs")
    codes, times = job.wait()
    assert codes == [2, 2] and max(times) < EXIT_LIMIT_S, (codes, times, job.output())
    _assert_once(job, 0, "sft failed on rank 0 of 2 at setup", "longer than the model's text length 8",
                 "16 tokens", "--text-len 8")


def test_nan_loss_stops_before_the_update(cache, tmp_path):
    job = start(train_args("sft", cache, tmp_path / "run", "run.steps=6", "run.save_every=2"), tmp_path / "logs",
                fault="nan_loss:1:3")
    codes, times = job.wait()
    assert codes == [2, 2] and max(times) < EXIT_LIMIT_S, (codes, times, job.output())
    _assert_once(job, 1, "at step 3 of 6", "the loss is nan at step 3 on the batch items ['", "weights stay finite")
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if not r.get("failed")] == [1, 2]
    (failure,) = [r for r in records if r.get("failed")]
    assert failure["nonfinite"] == "loss" and len(failure["items"]) == 1 and failure["rank"] == 1
    # The last checkpoint (step 2) holds finite weights and stays the resume point.
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step_0000002"


def _wait_for_steps(run: Path, n: int, job: Job, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    metrics = run / "metrics.jsonl"
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= n):
        if time.monotonic() > deadline or any(p.poll() is not None for p in job.procs):
            for p in job.procs:
                p.kill()
            pytest.fail(f"the job did not reach step {n}\n{job.output()[-3000:]}")
        time.sleep(0.05)


def test_rank_killed_mid_step(cache, tmp_path):
    job = start(train_args("sft", cache, tmp_path / "run", "run.steps=500"), tmp_path / "logs")
    _wait_for_steps(tmp_path / "run", 2, job)
    killed_at = time.monotonic()
    job.procs[1].send_signal(signal.SIGKILL)
    codes, times = job.wait()
    assert codes[1] == -signal.SIGKILL and codes[0] == 1, (codes, job.output())
    assert times[0] - (killed_at - job.started) < EXIT_LIMIT_S, times
    line = _assert_once(job, 0, "sft failed on rank 0 of 2 at step", "lost contact with another process")
    assert "of 500" in line


def test_frozen_rank_is_noticed_by_its_heartbeat(cache, tmp_path):
    """A frozen process keeps its sockets open, so gloo waits as NCCL would; the heartbeat ends the job."""
    job = start(train_args("sft", cache, tmp_path / "run", "run.steps=500"), tmp_path / "logs",
                env={"CHAMELEON_HEARTBEAT_TIMEOUT": "4"})
    _wait_for_steps(tmp_path / "run", 2, job)
    frozen_at = time.monotonic()
    job.procs[1].send_signal(signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while job.procs[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        waited = time.monotonic() - frozen_at
    finally:
        job.procs[1].kill()
        job.procs[1].wait()
    assert job.procs[0].returncode == 1 and waited < 4 + 10, (job.procs[0].returncode, waited, job.output())
    assert "rank 1 stopped responding (no heartbeat for" in job.text(0), job.output()


def test_full_disk_while_saving_keeps_the_previous_checkpoint(cache, tmp_path, caplog):
    run = tmp_path / "run"
    args = train_args("sft", cache, run, "run.steps=6", "run.save_every=2")
    job = start(args, tmp_path / "logs", fault="enospc:1:4")
    codes, times = job.wait()
    assert codes == [2, 2] and max(times) < EXIT_LIMIT_S, (codes, times, job.output())
    ckpts = run / "checkpoints"
    line = _assert_once(job, 0, f"saving checkpoint {ckpts / 'step_0000004'} failed", "rank 1: ",
                        "No space left on device", f"the previous checkpoint {ckpts / 'step_0000002'} is complete",
                        "free disk space")
    # Noticed at the next step boundary, or by the next save, which waits for this one first.
    assert re.search(r"sft failed on rank 0 of 2 at (step [56] of 6|checkpoint of step 6): ", line), line
    # quiet: rank 0 reports it; rank 1 stops wherever it was (a step, or the next save waiting for this one)
    assert re.search(r"rank 1 \(sft at (step [456] of 6|checkpoint of step [46])\): stopping", job.text(1)), job.text(1)
    assert (ckpts / "latest").read_text() == "step_0000002" and not (ckpts / "step_0000004").exists()
    # The previous checkpoint loads: the same command resumes from it (here in one process) and finishes.
    from chameleon_core.training.config import load_config
    from chameleon_core.training.stage_sft import run_sft

    overrides = [a for a in args[args.index("--config") + 2:] if a != "--set"]
    with caplog.at_level("INFO", logger="chameleon_core.training"):
        assert run_sft(load_config("tiny_sft", overrides)) == 6
    assert f"resuming from {ckpts / 'step_0000002'}" in caplog.text
    assert (run / "export" / "teacher.safetensors").is_file()


# -------------------------------------------------------------------------------------------------------------------
# Done when: the whole recipe on this dataset, on 2 processes, and the student streams
# -------------------------------------------------------------------------------------------------------------------


def test_recipe_on_two_processes_and_the_student_streams(cache, tmp_path):
    from chameleon_core.checkpoints import checkpoint_kind
    from chameleon_core.text import save_prompt_embeddings
    from chameleon_core.tools import stream as stream_cli
    from chameleon_core.tools.tiny_checkpoints import write_images, write_vae

    sft, forcing, dmd = tmp_path / "sft", tmp_path / "forcing", tmp_path / "dmd"
    teacher, forced = sft / "export/teacher.safetensors", forcing / "export/student.safetensors"
    jobs = [
        ("sft", sft, ["run.steps=2"]),
        ("forcing", forcing, ["run.steps=2", f"model.init={teacher}"]),
        ("dmd", dmd, ["run.steps=2", f"model.init={forced}", f"dmd.teacher={teacher}",
                      "dmd.critic_per_generator=1", "dmd.chunk_frames=1"]),
    ]
    for stage, out, sets in jobs:
        job = start(train_args(stage, cache, out, *sets), tmp_path / f"{stage}_logs")
        codes, _ = job.wait()
        assert codes == [0, 0], job.output()
    student = dmd / "export" / "student.safetensors"
    assert checkpoint_kind(student) == "student"

    write_images(tmp_path, size=64)
    write_vae(tmp_path / "wan2.2_vae.safetensors", seed=0)
    prompt = save_prompt_embeddings(tmp_path / "prompt.safetensors", torch.randn(6, 64), "walks")
    args = {"--student": student, "--vae": tmp_path / "wan2.2_vae.safetensors", "--prompt-embeds": prompt,
            "--reference": tmp_path / "reference.png", "--garment": tmp_path / "garment1.png", "--width": 64,
            "--height": 64, "--frames": 9, "--chunk-frames": 1, "--out": tmp_path / "frames"}
    assert stream_cli.main([str(x) for kv in args.items() for x in kv]) == 0
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 9
