"""Writing world datasets in the authors' layout (what :mod:`chameleon_core.training.data` and ``prepare`` read),
plus the ground truth the world metrics score against.

Layout of ``write_dataset(root, split, ...)``::

    root/<split>.csv                 video, prompt, width, height (video relative to the CSV's folder)
    root/<split>/<stem>.mp4          the clip, lossless H.264 RGB (libx264rgb, crf 0), 16 fps
    root/<split>/<stem>_src.png      reference: frame 0 re-dressed in a different garment of the same kind (RGB)
    root/<split>/<stem>_cloth.png    the garment on white (RGBA: alpha 0 around the garment)
    root/<split>/<stem>_labels.npz   ``labels`` uint8 [T, H, W]: 0 background, 1 skin, 2 hair, 3 trousers, 4 garment
    root/<split>/<stem>.json         metadata: attributes, switch garment, caption, frames, size, seed

``stem`` is ``<split>_<index:05d>``; sample ``index`` is :func:`~.catalog.sample_world` of seed
``seed * 100000 + index``, so a dataset is a pure function of its arguments (same arguments -> same bytes).
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .captions import caption
from .catalog import (
    FRAMES,
    SIZE,
    SPLITS,
    Garment,
    WorldSample,
    sample_switch_garment,
    sample_world,
)
from .render import Rendered, render, render_garment_on_white, render_reference

logger = logging.getLogger(__name__)

FPS = 16
METADATA_VERSION = 1


def sample_seed(seed: int, index: int) -> int:
    return seed * 100_000 + index


def write_video(path: Path, frames: torch.Tensor, fps: int = FPS) -> None:
    """uint8 ``[T, H, W, 3]`` -> a lossless H.264 RGB mp4 (PyAV, libx264rgb at crf 0)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        stream.options = {"crf": "0", "preset": "veryfast"}
        for frame in frames.numpy():
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_sample(folder: Path, stem: str, sample: WorldSample, *, size: int, frames: int, seed: int,
                 split: str) -> dict:
    """Write one sample's files (see the module docstring); returns its CSV row."""
    clip = render(sample, size=size, frames=frames)
    write_video(folder / f"{stem}.mp4", clip.frames)
    Image.fromarray(render_reference(sample, size=size).frames[0].numpy()).save(folder / f"{stem}_src.png")
    Image.fromarray(render_garment_on_white(sample.garment, size=size).numpy(), "RGBA").save(
        folder / f"{stem}_cloth.png")
    np.savez_compressed(folder / f"{stem}_labels.npz", labels=clip.labels.numpy())
    cap = caption(sample)
    meta = {
        "version": METADATA_VERSION,
        "sample": sample.to_dict(),
        "switch_garment": sample_switch_garment(sample, seed).__dict__,
        "caption": cap,
        "frames": frames,
        "size": size,
        "fps": FPS,
        "seed": seed,
        "split": split,
        "combination": list(sample.combination),
    }
    (folder / f"{stem}.json").write_text(json.dumps(meta, indent=1))
    return {"video": f"{split}/{stem}.mp4", "prompt": json.dumps(cap), "width": size, "height": size}


def write_dataset(root: str | Path, split: str = "train", count: int = 16, size: int = SIZE, frames: int = FRAMES,
                  seed: int = 0, workers: int = 1) -> Path:
    """Write ``count`` samples of ``split`` under ``root/<split>/`` and the training CSV; returns the CSV path
    ``root/<split>.csv``. Deterministic in its arguments; ``workers`` > 1 renders in that many processes (each sample
    is a function of its own seed, so the files are the same bytes; where the platform cannot fork, one process)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if frames < 1 or (frames - 1) % 4:
        raise ValueError(f"frames must be 4k+1 (the VAE's causal frame count: 9, 17, 33, ...), got {frames}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    root = Path(root)
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, min(WORKER_SAMPLES, -(-count // workers)))
    ranges = [(a, min(a + step, count)) for a in range(0, count, step)]
    if workers == 1 or len(ranges) == 1 or "fork" not in multiprocessing.get_all_start_methods():
        rows = [row for a, b in ranges for row in _write_range(folder, split, a, b, size, frames, seed)]
    else:
        from concurrent.futures import ProcessPoolExecutor

        # fork, as torch's DataLoader workers do, each child on one thread; (spawn would re-run a caller's script
        # that has no `if __name__ == "__main__"` guard)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_one_thread) as pool:
            parts = pool.map(_write_range, *zip(*[(folder, split, a, b, size, frames, seed) for a, b in ranges]))
            rows = [row for part in parts for row in part]
    path = root / f"{split}.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "prompt", "width", "height"])
        writer.writeheader()
        writer.writerows(rows)
    logger.info("world dataset: %d %s samples (%dx%d, %d frames) in %s", count, split, size, size, frames, folder)
    return path


WORKER_SAMPLES = 100
"""Samples a worker process writes per task (few tasks: each pays a round trip; not one: the last would run alone)."""


def _one_thread() -> None:
    torch.set_num_threads(1)


def _write_range(folder: Path, split: str, start: int, stop: int, size: int, frames: int, seed: int) -> list[dict]:
    """Samples ``start`` .. ``stop - 1`` of the split; their CSV rows in order."""
    rows = []
    for i in range(start, stop):
        s = sample_seed(seed, i)
        rows.append(write_sample(folder, f"{split}_{i:05d}", sample_world(s, split), size=size, frames=frames,
                                 seed=s, split=split))
    return rows


def read_metadata(video_path: str | Path) -> dict:
    """The metadata JSON written beside a dataset video (``<stem>.json``), with ``sample`` as a
    :class:`~.catalog.WorldSample` and ``switch_garment`` as a :class:`~.catalog.Garment`."""
    path = Path(video_path).with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"world metadata not found: {path}; pass a video written by write_dataset "
                                "(its <stem>.json sits beside it)")
    meta = json.loads(path.read_text())
    meta["sample"] = WorldSample.from_dict(meta["sample"])
    meta["switch_garment"] = Garment(**meta["switch_garment"])
    return meta


def load_labels(video_path: str | Path) -> torch.Tensor:
    """The ground-truth labels ``[T, H, W]`` uint8 written beside a dataset video (``<stem>_labels.npz``)."""
    from chameleon_core.checkpoints.errors import CheckpointError, check_regular_file, first_line

    path = Path(video_path).with_name(Path(video_path).stem + "_labels.npz")
    check_regular_file(path, "world labels file", "write the dataset again (write_dataset)")  # missing, FIFO ...
    try:
        with np.load(path, allow_pickle=False) as data:
            labels = data["labels"]
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:  # an object array, a damaged file
        if "Object arrays" in str(e):
            why = "it holds Python objects, which are never unpickled"
        elif "allow_pickle" in str(e):
            why = "it is not an .npz of arrays: numpy would have to unpickle it, which is never done"
        else:
            why = f"{type(e).__name__}: {first_line(e)}"
        raise CheckpointError(f"world labels file {path} cannot be read ({why}); it should hold a uint8 array "
                              "'labels' [T, H, W]: write the dataset again (write_dataset)") from None
    if labels.dtype != np.uint8 or labels.ndim != 3:
        raise CheckpointError(f"world labels file {path} holds a {labels.dtype} array of shape {labels.shape}, not "
                              "uint8 labels [T, H, W]; write the dataset again (write_dataset)")
    return torch.from_numpy(labels)


def ground_truth(meta: dict, *, frames: int | None = None, switch_frame: int | None = None) -> Rendered:
    """Re-render a sample's ground truth from its metadata (deterministic); with ``switch_frame``, the switch to
    ``meta["switch_garment"]`` at that frame."""
    sample = meta["sample"]
    kwargs = {} if switch_frame is None else {"switch_to": meta["switch_garment"], "switch_frame": switch_frame}
    return render(sample, size=meta["size"], frames=frames or meta["frames"], **kwargs)
