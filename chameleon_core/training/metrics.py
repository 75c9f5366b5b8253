"""Per-stage ``metrics.jsonl`` (rank 0) and a progress bar on an interactive terminal."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class Metrics:
    """Appends one JSON line per logged step: ``step``, the losses and whatever else is passed.

    Only rank 0 writes. A progress bar (tqdm when installed, else a log line every ``log_every`` steps) appears only
    when stderr is a terminal.
    """

    def __init__(self, path: Path, *, enabled: bool, total: int, start: int = 0, desc: str = "train") -> None:
        self.enabled = enabled
        self.path = path
        self._bar = None
        self._last = time.perf_counter()
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            if sys.stderr.isatty():
                try:
                    from tqdm import tqdm

                    self._bar = tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True)
                except ImportError:
                    self._bar = None

    def log(self, step: int, **values: Any) -> dict[str, Any]:
        record = {"step": step, **{k: (float(v) if isinstance(v, (int, float)) else v) for k, v in values.items()}}
        if not self.enabled:
            return record
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if isinstance(v, float) and k != "lr"})
        else:
            logger.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in values.items() if isinstance(v, float)))
        return record

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
