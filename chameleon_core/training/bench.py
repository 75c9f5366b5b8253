"""Training benchmark: seconds per step, samples per second and peak memory per process, for one stage.

``python -m chameleon_core.training bench --stage sft`` writes a synthetic dataset in the authors' layout
(:mod:`.synthetic`), prepares its latent cache with the random stand-ins, and trains ``--steps`` steps of the
stage's config (default ``tiny_<stage>``) without exporting. Under ``torchrun`` every process reports. Step times
leave out the first step (allocation, lazy init). Peak memory is the CUDA allocator's peak on GPU, the process's
peak resident set on CPU (which includes the preparation step and the Python runtime).
"""

from __future__ import annotations

import logging
import resource
import statistics
import tempfile
from pathlib import Path

import torch

from chameleon_core.config import preset

from .config import load_config
from .distributed import all_gather_object, broadcast_object, init_distributed
from .faults import FailFast
from .metrics import read_metrics
from .prepare import prepare
from .runtime import Run
from .synthetic import write_dataset

logger = logging.getLogger(__name__)


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def bench(stage: str, config: str, overrides: list[str], *, steps: int = 5, frames: int = 9, width: int = 64,
          height: int = 64) -> dict:
    """Run the benchmark; returns (on rank 0) and logs the report."""
    cfg0 = load_config(config, overrides, stage=stage)
    dist = init_distributed(cfg0.run.device)
    with FailFast(dist.rank, dist.world_size, "bench", where=lambda: f"{stage} benchmark setup"):
        tmp = Path(broadcast_object(tempfile.mkdtemp(prefix="chameleon_bench_") if dist.is_main else None))
        if dist.is_main:
            write_dataset(tmp / "clips", clips=max(4, 2 * cfg0.data.batch_size), frames=frames, width=width,
                          height=height)
        all_gather_object(None)  # wait for the files
        arch = preset(cfg0.model.arch)
        prepare(tmp / "clips" / "train.csv", tmp / "cache", vae="random:wan2.2-tiny",
                text_encoder=f"random:{arch.text_dim}", frames=frames, width=width, height=height, dtype="fp32",
                device=cfg0.run.device, keep_group=True, text_len=cfg0.model.text_len or arch.text_len)
    cfg = load_config(config, [*overrides, f"data.cache={tmp / 'cache'}", f"run.out={tmp / 'run'}",
                               f"run.steps={steps}", f"run.save_every={steps + 1}", "run.export=false",
                               "run.resume=false", "run.log_every=1"], stage=stage)
    run = Run.start(cfg)
    with run.failing_fast():
        if dist.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dist.device)
        if stage == "sft":
            from .stage_sft import run_sft

            run_sft(cfg, run)
        elif stage == "forcing":
            from .stage_forcing import run_forcing

            run_forcing(cfg, run)
        else:
            from .stage_dmd import run_dmd

            run_dmd(run)
        peaks = all_gather_object(_peak_bytes(dist.device))
    run.close()
    if not dist.is_main:
        return {}
    records = read_metrics(tmp / "run" / "metrics.jsonl")
    times = [r["seconds_per_step"] for r in records[1:]] or [records[0]["seconds_per_step"]]
    sec = statistics.median(times)
    report = {
        "stage": stage, "config": config, "processes": dist.world_size, "device": str(dist.device),
        "global_batch": cfg.data.batch_size, "frames": frames, "size": f"{width}x{height}",
        "seconds_per_step": sec, "samples_per_second": cfg.data.batch_size / sec,
        "peak_memory_mib": [p / 2**20 for p in peaks],
    }
    logger.info(
        "bench %s (%s): %d process(es) on %s, global batch %d, %d frames %dx%d: %.3f s/step, %.2f samples/s, "
        "peak memory per process %s MiB",
        stage, config, dist.world_size, dist.device, cfg.data.batch_size, frames, width, height, sec,
        cfg.data.batch_size / sec, ", ".join(f"{p / 2**20:.0f}" for p in peaks),
    )
    return report
