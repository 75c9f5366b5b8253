"""Fault injection for every load path (issue 13): each file a loader reads is replaced by a truncated, an empty, a
wrong-type (text), a non-regular (a FIFO) and a NaN-carrying one, and the loader must raise its one error type
(:class:`~chameleon_core.checkpoints.CheckpointError` for weights and embeddings, :class:`~chameleon_core.images.
ImageFileError` for images; both ValueErrors, which the nodes and the command line catch) with the file named.

A FIFO would block ``open`` forever: every load runs in a daemon thread with a timeout, and a regression fails the
test (the FIFO is then opened for writing, which releases the blocked reader) instead of hanging the suite.
Any future loader adds a row to :data:`LOADERS` and passes the same five faults.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from chameleon_core.checkpoints import CheckpointError, load_transformer, load_vae
from chameleon_core.images import ImageFileError, load_image
from tests.tiny_models import tiny_transformer
from chameleon_core.checkpoints.layout_writers import write_transformer_checkpoint
from chameleon_core.text import load_prompt_embeddings, save_prompt_embeddings
from chameleon_core.vae import build_vae

TIMEOUT = 20.0
FAULTS = ("truncated", "empty", "wrong-type", "non-regular", "nan")


def _call(fn: Callable[[], object], fifo: Path | None = None) -> BaseException | None:
    """Run ``fn`` in a daemon thread; returns what it raised (None if it returned). Fails on a hang."""
    box: list[BaseException | None] = [None]

    def target() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 -- handed to the test
            box[0] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        if fifo is not None:  # release a reader blocked on the FIFO so the thread can end
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        pytest.fail(f"the loader hung for {TIMEOUT} s on {fifo or 'its input'} (a non-regular file must be refused)")
    return box[0]


# --- writers of a valid input per load path: (folder) -> (path to load, the file to damage) -------------------------


def _model_sd():
    return tiny_transformer(3).state_dict()


def transformer_file(tmp: Path) -> tuple[Path, Path]:
    p = write_transformer_checkpoint(_model_sd(), tmp / "student.safetensors")
    return p, p


def transformer_folder(tmp: Path) -> tuple[Path, Path]:
    folder = tmp / "model"
    folder.mkdir()
    p = write_transformer_checkpoint(_model_sd(), folder / "diffusion_pytorch_model.safetensors")
    return folder, p


def transformer_sharded(tmp: Path) -> tuple[Path, Path]:
    index = write_transformer_checkpoint(_model_sd(), tmp / "sharded", shards=2)
    shards = sorted(index.parent.glob("*.safetensors"))
    return index, shards[-1]


def transformer_training_pt(tmp: Path) -> tuple[Path, Path]:
    p = write_transformer_checkpoint(_model_sd(), tmp / "train.pt", layout="training")
    return p, p


def vae_safetensors(tmp: Path) -> tuple[Path, Path]:
    p = tmp / "wan2.2_vae.safetensors"
    save_file({k: v.contiguous() for k, v in build_vae("wan2.2-tiny", seed=1).model.state_dict().items()}, str(p))
    return p, p


def vae_pth(tmp: Path) -> tuple[Path, Path]:
    p = tmp / "Wan2.2_VAE.pth"
    torch.save(build_vae("wan2.2-tiny", seed=1).model.state_dict(), p)
    return p, p


def prompt_embeddings(tmp: Path) -> tuple[Path, Path]:
    p = save_prompt_embeddings(tmp / "prompt.safetensors", torch.randn(7, 64), "a prompt")
    return p, p


def image_png(tmp: Path) -> tuple[Path, Path]:
    from PIL import Image

    p = tmp / "person.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 32, 3), dtype=np.uint8)).save(p)
    return p, p


def umt5_folder(tmp: Path) -> tuple[Path, Path]:
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    folder = tmp / "umt5"
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "dress": 4}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                         unk_token="<unk>").save_pretrained(folder)  # fmt: skip
    config = transformers.UMT5Config(vocab_size=8, d_model=16, d_kv=4, num_heads=2, d_ff=16, num_layers=1,
                                     relative_attention_num_buckets=4, relative_attention_max_distance=8,
                                     pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)  # fmt: skip
    transformers.UMT5EncoderModel(config).save_pretrained(folder)
    return folder, folder / "model.safetensors"


def _load_umt5(path: Path) -> None:
    from chameleon_core.text import load_prompt_encoder

    load_prompt_encoder(path, device="cpu", dtype=torch.float32)


LOADERS: dict[str, tuple[Callable[[Path], tuple[Path, Path]], Callable[[Path], object], type[Exception]]] = {
    "transformer file": (transformer_file, load_transformer, CheckpointError),
    "transformer folder": (transformer_folder, load_transformer, CheckpointError),
    "transformer sharded": (transformer_sharded, load_transformer, CheckpointError),
    "transformer training .pt": (transformer_training_pt, load_transformer, CheckpointError),
    "VAE safetensors": (vae_safetensors, load_vae, CheckpointError),
    "VAE .pth": (vae_pth, load_vae, CheckpointError),
    "prompt embeddings": (prompt_embeddings, load_prompt_embeddings, CheckpointError),
    "umT5 folder": (umt5_folder, _load_umt5, CheckpointError),
    "image": (image_png, load_image, ImageFileError),
}


def _inject_nan(target: Path) -> None:
    """Rewrite ``target`` with one NaN in its largest floating tensor (or pixel), in its own format."""
    if target.suffix == ".png":  # PNG holds integers: a float TIFF under the same name carries the NaN
        from PIL import Image

        arr = np.random.default_rng(0).random((40, 32), dtype=np.float32)
        arr[3, 4] = np.nan
        Image.fromarray(arr, mode="F").save(target, format="TIFF")
        return
    if target.suffix in (".pt", ".pth"):
        obj = torch.load(target, weights_only=True)
        sd = obj.get("generator_ema", obj)
        name = max((k for k, v in sd.items() if v.is_floating_point()), key=lambda k: sd[k].numel())
        sd[name] = sd[name].clone()
        sd[name].view(-1)[0] = float("nan")
        torch.save(obj, target)
        return
    from safetensors import safe_open

    with safe_open(str(target), framework="pt") as f:
        names = list(f.keys())  # noqa: SIM118 -- safe_open is no dict
        tensors, meta = {k: f.get_tensor(k) for k in names}, f.metadata()
    name = max((k for k, v in tensors.items() if v.is_floating_point()), key=lambda k: tensors[k].numel())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(target), metadata=meta)


def _damage(fault: str, target: Path) -> None:
    if fault == "truncated":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif fault == "empty":
        target.write_bytes(b"")
    elif fault == "wrong-type":
        target.write_text("this is a text file, not weights\n" * 20)
    elif fault == "non-regular":
        target.unlink()
        os.mkfifo(target)
    elif fault == "nan":
        _inject_nan(target)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo (POSIX)")
@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_fault_of_every_load_path_raises_the_one_error_naming_the_file(tmp_path, loader):
    write, load, error = LOADERS[loader]
    for fault in FAULTS:
        folder = tmp_path / fault.replace("-", "_")
        folder.mkdir()
        path, target = write(folder)
        _damage(fault, target)
        raised = _call(lambda path=path: load(path), fifo=target if fault == "non-regular" else None)
        assert raised is not None, f"{loader}: a {fault} {target.name} loaded without an error"
        assert isinstance(raised, error), (loader, fault, type(raised).__name__, raised)
        message = str(raised)
        assert target.name in message or str(target.parent) in message, (loader, fault, message)
        assert "weights_only=False" not in message and "malicious" not in message, (loader, fault, message)
        if fault == "nan":
            assert "NaN" in message, (loader, message)
        if fault == "non-regular":
            assert "not a regular file" in message, (loader, message)
