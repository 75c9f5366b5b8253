"""Runs ``python -m chameleon_core.training ARGS`` with one fault injected (for tests/test_training_faults.py).

Usage: ``python tests/training_fault_harness.py FAULT ARGS...`` where FAULT is

- ``nan_loss:RANK:STEP``: the SFT loss of process RANK is NaN at step STEP (1-based, as metrics.jsonl counts);
- ``enospc:RANK:STEP``: DCP's file writer of process RANK raises ``OSError(ENOSPC)`` while writing the checkpoint of
  step STEP (a full disk, in the background writer thread);
- ``none``: no fault.

The other processes of the job run the command unchanged.
"""

from __future__ import annotations

import errno
import os
import sys


def _inject(kind: str, step: int) -> None:
    if kind == "nan_loss":
        from chameleon_core.training import stage_sft

        real = stage_sft.sft_loss

        def sft_loss(model, batch, s, cfg, dtype):
            loss, extra = real(model, batch, s, cfg, dtype)
            return (loss * float("nan") if s + 1 == step else loss), extra

        stage_sft.sft_loss = sft_loss
    elif kind == "enospc":
        from torch.distributed.checkpoint import FileSystemWriter

        real_write = FileSystemWriter.write_data

        def write_data(self, plan, planner):
            if f"step_{step:07d}" in str(self.path):
                raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
            return real_write(self, plan, planner)

        FileSystemWriter.write_data = write_data
    elif kind != "none":
        raise SystemExit(f"unknown fault {kind!r}")


def main() -> int:
    fault, args = sys.argv[1], sys.argv[2:]
    if fault != "none":
        kind, rank, step = fault.split(":")
        if int(os.environ.get("RANK", "0")) == int(rank):
            _inject(kind, int(step))
    from chameleon_core.training.cli import main as cli

    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
