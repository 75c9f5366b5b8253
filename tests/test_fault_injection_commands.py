"""Fault injection for the commands (issue 26): every bad input and fault of the training, evaluation and tiny-decoder
surfaces, tried as a user would, must end in one clear refusal -- never a raw traceback, never a silent wrong result,
never a pickle that runs code.

:data:`CASES` is the list (the acceptance of issue 26, in the style of ``test_fault_injection.py``): each case damages
or mis-sets one input and calls a command's ``main(argv)`` in this process (or a library function), and names what
its message must contain: the input (a path, a key, the value) and the fix. A command must return exit code 2 with
one ``error:`` message on stderr, no traceback and no advice to load with ``weights_only=False``; a library function
must raise the error type of its package (:class:`~chameleon_core.checkpoints.CheckpointError` for files, a
ValueError for values). Cases that plant a pickle whose unpickling would create a marker folder check that it was
never created. Every call runs in a daemon thread with a timeout, so a FIFO that blocks a reader fails the case
instead of hanging the suite (the FIFO is then opened for writing, which releases it). With
``CHAMELEON_FAULT_REPORT=FILE`` every case appends its verdict and message to ``FILE`` (JSON lines).

Cases that belong to other surfaces are tested where they live: resume semantics, DCP metadata, NaN losses and NaN
weights at export (the training runtime), ``world.codec`` and ``training.world`` (the world commands).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from chameleon_core.checkpoints import CheckpointError, CheckpointNotFoundError

TIMEOUT = 60.0
REPORT = "CHAMELEON_FAULT_REPORT"
"""Environment variable: a file to which every case appends its verdict and message (one JSON line each), to audit
the messages or to compare two versions of the pack."""
SKIP_NO_FIFO = not hasattr(os, "mkfifo")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- outcomes and the verdict ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int | None
    """Exit code of a command (None for a library call)."""
    message: str
    """What a command wrote on stderr, or the text of the exception a library call raised."""
    raised: BaseException | None = None
    """What escaped: a command's exception (a traceback), or the library call's error."""


@dataclass(frozen=True)
class Case:
    run: Callable[[Env, Path], Outcome]
    expect: tuple[str, ...]
    """Substrings of the message: the input and the fix."""
    error: type[BaseException] | None = None
    """For a library call: the error type it must raise."""


def verdict(case: Case, out: Outcome, marker: Path | None = None) -> str:
    """``clear``, ``traceback``, ``silent`` (no refusal), ``unclear`` (refused without naming the input and the fix),
    ``hang`` or ``pickle ran``."""
    if marker is not None and marker.exists():
        return "pickle ran"
    if out.code == -1:
        return "hang"
    if case.error is None:  # a command
        if out.raised is not None:
            return "traceback"
        if out.code == 0:
            return "silent"
    else:
        if out.raised is None:
            return "silent"
        if not isinstance(out.raised, case.error):
            return "traceback"
    text = " ".join(out.message.split())
    if "Traceback" in out.message or "weights_only=False" in text or (case.error is None and out.code != 2):
        return "unclear"
    if not all(e in text for e in case.expect):
        return "unclear"
    return "clear"


def _capture(fn: Callable[[], int]) -> Outcome:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            code = fn()
    except SystemExit as e:  # an argparse exit of a command that does not catch it
        return Outcome(e.code if isinstance(e.code, int) else 1, buf.getvalue())
    except BaseException as e:  # noqa: BLE001 -- a traceback the user would see
        return Outcome(1, buf.getvalue() + f"\nTraceback (escaped): {type(e).__name__}: {e}", e)
    return Outcome(int(code or 0), buf.getvalue())


def training(*argv: object) -> Callable[[], Outcome]:
    from chameleon_core.training.cli import main

    return lambda: _capture(lambda: main([str(a) for a in argv]))


def evaluation(*argv: object) -> Callable[[], Outcome]:
    from chameleon_core.eval.cli import main

    return lambda: _capture(lambda: main([str(a) for a in argv]))


def stream(*argv: object) -> Callable[[], Outcome]:
    from chameleon_core.tools.stream import main

    return lambda: _capture(lambda: main([str(a) for a in argv]))


def library(fn: Callable[[], object]) -> Outcome:
    try:
        fn()
    except BaseException as e:  # noqa: BLE001
        return Outcome(None, str(e), e)
    return Outcome(None, "")


def run_case(case: Case, env: Env, tmp: Path) -> Outcome:
    """Run a case in a daemon thread; a hang is reported as code -1 after releasing every FIFO of the case."""
    box: list[Outcome] = []

    skipped: list[BaseException] = []

    def target() -> None:
        try:
            box.append(case.run(env, tmp))
        except pytest.skip.Exception as e:
            skipped.append(e)
        except BaseException as e:  # noqa: BLE001 -- a defect of the case itself, raised in the test
            box.append(Outcome(None, f"the case itself failed: {type(e).__name__}: {e}", e))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        for f in tmp.rglob("*"):
            if f.is_fifo():
                with contextlib.suppress(OSError):
                    os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
        return Outcome(-1, f"hung for {TIMEOUT} s")
    if skipped:
        raise skipped[0]
    return box[0]


# --- the faults -----------------------------------------------------------------------------------------------------


def truncate(p: Path) -> Path:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def text(p: Path) -> Path:
    p.write_text("this is a text file, not what was asked for\n" * 20)
    return p


def fifo(p: Path) -> Path:
    if p.exists():
        p.unlink()
    os.mkfifo(p)
    return p


def with_nan(p: Path) -> Path:
    tensors = load_file(str(p))
    name = max((k for k, v in tensors.items() if v.is_floating_point()), key=lambda k: tensors[k].numel())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(p))
    return p


class _Plant:
    """Unpickling this creates the folder ``path``: the marker of a pickle that ran code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def evil_pickle(p: Path, marker: Path) -> Path:
    torch.save({"layers.0.weight": _Plant(marker), "decoder.1.weight": _Plant(marker)}, p)
    return p


MARKER = "pickle_ran"
"""Name of the folder an evil pickle would create in the case's folder."""


# --- the environment shared by the cases ----------------------------------------------------------------------------


@dataclass
class Env:
    root: Path
    csv: Path
    cache: Path
    student: Path
    train_pt: Path
    vae: Path
    taehv: Path
    mlp: Path
    clip: Path | None
    world: Path
    world_video: Path
    reference: Path
    garment: Path
    bench: Path
    bench_videos: Path
    extra: dict = field(default_factory=dict)

    def copy(self, src: Path, tmp: Path, name: str | None = None) -> Path:
        dst = tmp / (name or src.name)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
        return dst


def _aesthetic_state(dim: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = {0: (1024, dim), 2: (128, 1024), 4: (64, 128), 6: (16, 64), 7: (1, 16)}
    out = {}
    for i, (o, n) in shapes.items():
        out[f"layers.{i}.weight"] = torch.randn(o, n, generator=g) / n**0.5
        out[f"layers.{i}.bias"] = torch.zeros(o)
    return out


def _tiny_clip(folder: Path) -> Path | None:
    try:
        import transformers
    except ImportError:
        return None
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 64, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8)
    transformers.CLIPModel(cfg).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    pytest.importorskip("av")
    from PIL import Image

    from chameleon_core.taehv import TAEHVConfig, random_taehv
    from tests.tiny_models import tiny_transformer
    from chameleon_core.checkpoints.layout_writers import write_transformer_checkpoint
    from chameleon_core.training.prepare import prepare
    from chameleon_core.training.synthetic import write_dataset
    from chameleon_core.vae import build_vae
    from chameleon_core.world import write_dataset as write_world

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("commands")
    csv_path = write_dataset(root / "clips", clips=2, frames=9, width=32, height=64)
    prepare(csv_path, root / "cache", vae="random:wan2.2-tiny", text_encoder="random:64", frames=9, width=32, height=64,
            dtype="fp32", device="cpu")
    student = write_transformer_checkpoint(tiny_transformer(3).state_dict(), root / "student.safetensors")
    train_pt = write_transformer_checkpoint(tiny_transformer(3).state_dict(), root / "train.pt", layout="training")
    vae = root / "wan2.2_vae.safetensors"
    save_file({k: v.contiguous() for k, v in build_vae("wan2.2-tiny", seed=1).model.state_dict().items()}, str(vae))
    taehv = root / "taew2_2.safetensors"
    model = random_taehv(TAEHVConfig(latent_channels=48, patch_size=2, widths=(16, 8, 8, 4)), seed=1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(taehv))
    mlp = root / "aesthetic.safetensors"
    save_file(_aesthetic_state(8), str(mlp))
    world_csv = write_world(root / "world", "test", count=1, size=32, frames=9, seed=1)
    world = world_csv.parent / "test"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(root / "person.png")
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(root / "shirt.png")
    bench = root / "bench"
    (bench / "samples").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)).save(bench / "samples" / "0_src.png")
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(bench / "samples" / "0_cloth.png")
    with open(bench / "meta_data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "src_image", "cloth_image"])
        w.writerow([json.dumps({"caption": {"en_short": ["A woman walks."]}}), "samples/0_src.png",
                    "samples/0_cloth.png"])
    videos = root / "gen"
    videos.mkdir()
    shutil.copy(world / "test_00000.mp4", videos / "output_0.mp4")
    yield Env(root, csv_path, root / "cache", student, train_pt, vae, taehv, mlp, _tiny_clip(root / "clip"), world,
              world / "test_00000.mp4", root / "person.png", root / "shirt.png", bench / "meta_data.csv", videos)
    torch.set_num_threads(threads)


# --- the cases ------------------------------------------------------------------------------------------------------

CASES: dict[str, Case] = {}


def case(name: str, *expect: str, error: type[BaseException] | None = None):
    def register(fn: Callable[[Env, Path], Outcome | Callable[[], Outcome]]):
        def run(env: Env, tmp: Path) -> Outcome:
            result = fn(env, tmp)
            return result() if callable(result) else result

        assert name not in CASES, name
        CASES[name] = Case(run, expect, error)
        return fn

    return register


# training: the config and --set, refused when loaded (before the process group, the models or the data) ---------------


def _stage(env: Env, tmp: Path, *sets: str, stage: str = "sft", config: object | None = None) -> Callable[[], Outcome]:
    argv: list[object] = [stage, "--config", config or f"tiny_{stage}", "--set", f"data.cache={env.cache}",
                          "--set", f"run.out={tmp / 'run'}"]
    for s in sets:
        argv += ["--set", s]
    return training("--log-level", "WARNING", *argv)


SET_CASES = {
    # name: (stage, --set, expected substrings)
    "run.steps=-5 (exported an untrained teacher)": ("sft", "run.steps=-5", ("run.steps", "-5", ">= 1", "--set run.steps=")),
    "run.steps=0": ("sft", "run.steps=0", ("run.steps", ">= 1")),
    "flow.shift=NaN (trained to NaN weights)": ("sft", "flow.shift=NaN", ("flow.shift", "nan", "finite", "--set flow.shift=")),
    "flow.shift=-1": ("sft", "flow.shift=-1", ("flow.shift", "> 0")),
    "flow.shift=Infinity": ("forcing", "flow.shift=Infinity", ("flow.shift", "inf", "finite")),
    "optim.lr=abc": ("sft", "optim.lr=abc", ("optim.lr", "'abc'", "a number", "--set optim.lr=")),
    "optim.lr=0": ("sft", "optim.lr=0", ("optim.lr", "> 0")),
    "optim.lr=NaN": ("dmd", "optim.lr=NaN", ("optim.lr", "finite")),
    "optim.eps=-1e-8": ("sft", "optim.eps=-1e-8", ("optim.eps", "> 0")),
    "optim.clip=0": ("sft", "optim.clip=0", ("optim.clip", "> 0")),
    "optim.weight_decay=-0.1": ("sft", "optim.weight_decay=-0.1", ("optim.weight_decay", ">= 0")),
    "optim.warmup_steps=-1": ("sft", "optim.warmup_steps=-1", ("optim.warmup_steps", ">= 0")),
    "optim.betas=[2,3]": ("sft", "optim.betas=[2,3]", ("optim.betas", "[2.0, 3.0]", "0 <= beta < 1")),
    "optim.betas=[0.9]": ("sft", "optim.betas=[0.9]", ("optim.betas", "2 numbers")),
    "optim.betas=x": ("sft", "optim.betas=x", ("optim.betas", "'x'", "2 numbers")),
    "data.batch_size=0": ("sft", "data.batch_size=0", ("data.batch_size", ">= 1", "--set data.batch_size=")),
    "data.batch_size=1.5": ("sft", "data.batch_size=1.5", ("data.batch_size", "1.5", "whole number")),
    "data.batch_size=two": ("sft", "data.batch_size=two", ("data.batch_size", "'two'", "whole number")),
    "data.micro_batch=3 (above the batch)": ("sft", "data.micro_batch=3", ("data.micro_batch", "data.batch_size")),
    "data.full_caption_prob=1.5": ("sft", "data.full_caption_prob=1.5", ("data.full_caption_prob", "0..1")),
    "data.empty_text_prob=-0.1": ("sft", "data.empty_text_prob=-0.1", ("data.empty_text_prob", "0..1")),
    "data.fixed_batch=maybe": ("sft", "data.fixed_batch=maybe", ("data.fixed_batch", "true or false")),
    "model.arch=wan9": ("sft", "model.arch=wan9", ("model.arch", "wan9", "wan2.2-ti2v-5b")),
    "model.param_dtype=fp64": ("sft", "model.param_dtype=fp64", ("model.param_dtype", "fp64", "bf16")),
    "model.text_len=0": ("sft", "model.text_len=0", ("model.text_len", ">= 1")),
    "model.init=random:x": ("sft", "model.init=random:x", ("model.init", "random:SEED")),
    "model.fsdp=1": ("sft", "model.fsdp=1", ("model.fsdp", "true or false")),
    "forcing.chunk_frames=0": ("forcing", "forcing.chunk_frames=0", ("forcing.chunk_frames", ">= 1")),
    "forcing.attention=fast": ("forcing", "forcing.attention=fast", ("forcing.attention", "sdpa")),
    "dmd.critic_per_generator=0": ("dmd", "dmd.critic_per_generator=0", ("dmd.critic_per_generator", ">= 1")),
    "dmd.tau=0": ("dmd", "dmd.tau=0", ("dmd.tau", "> 0")),
    "dmd.guidance=NaN": ("dmd", "dmd.guidance=NaN", ("dmd.guidance", "finite")),
    "dmd.ema_decay=1.5": ("dmd", "dmd.ema_decay=1.5", ("dmd.ema_decay", "0..1")),
    "dmd.t_min=990 (above t_max)": ("dmd", "dmd.t_min=990", ("dmd.t_min", "dmd.t_max", "--set dmd.t_min=")),
    "dmd.t_max=2000": ("dmd", "dmd.t_max=2000", ("dmd.t_max", "0..1000")),
    "dmd.denoise_steps=0": ("dmd", "dmd.denoise_steps=0", ("dmd.denoise_steps", ">= 1")),
    "dmd.chunk_frames=-1": ("dmd", "dmd.chunk_frames=-1", ("dmd.chunk_frames", ">= 1")),
    "dmd.critic_lr=-1": ("dmd", "dmd.critic_lr=-1", ("dmd.critic_lr", "> 0")),
    "run.save_every=0": ("sft", "run.save_every=0", ("run.save_every", ">= 1")),
    "run.log_every=0": ("sft", "run.log_every=0", ("run.log_every", ">= 1")),
    "run.stop_after=0": ("sft", "run.stop_after=0", ("run.stop_after", ">= 1")),
    "run.seed=-1": ("sft", "run.seed=-1", ("run.seed", "-1", "0..")),
    "run.seed=2**64": ("sft", f"run.seed={2**64}", ("run.seed", str(2**64), "0..")),
    "run.resume=yes": ("sft", "run.resume=yes", ("run.resume", "'yes'", "true or false")),
    "run.export_dtype=int8": ("sft", "run.export_dtype=int8", ("run.export_dtype", "int8", "fp32")),
    "run.device=tpu": ("sft", "run.device=tpu", ("run.device", "tpu", "cpu")),
    "unknown key optim.lrr": ("sft", "optim.lrr=1", ("optim.lrr", "valid keys", "'lr'")),
    "unknown section foo.bar": ("sft", "foo.bar=1", ("foo.bar", "valid keys", "'optim'")),
    "--set without =": ("sft", "run.steps", ("run.steps", "KEY=VALUE")),
    "--set of a section": ("sft", "run=3", ("run", "3", "--set run.KEY=VALUE")),
}


def _set_case(stage: str, item: str) -> Callable[[Env, Path], Callable[[], Outcome]]:
    return lambda env, tmp: _stage(env, tmp, item, stage=stage)


for _name, (_stage_name, _item, _expect) in SET_CASES.items():
    case(f"training {_stage_name} --set {_name}", *_expect)(_set_case(_stage_name, _item))


@case("training sft: a wrong --set leaves nothing behind (no run folder, no export)", "run.steps")
def _steps_no_export(env, tmp):
    out = _stage(env, tmp, "run.steps=-5")()
    if (tmp / "run").exists():
        return Outcome(0, out.message + " -- yet the run folder was written")
    return out


@case("training sft: several bad values are all named at once", "run.steps", "flow.shift", "optim.lr", "3 problems")
def _three_problems(env, tmp):
    return _stage(env, tmp, "run.steps=-5", "flow.shift=NaN", "optim.lr=abc")


@case("training: run.device=cuda without CUDA", "run.device", "cuda", "cpu")
def _cuda(env, tmp):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return _stage(env, tmp, "run.device=cuda")


@case("training: --config missing file", "--config", "nowhere.json", "presets")
def _config_missing(env, tmp):
    return _stage(env, tmp, config=tmp / "nowhere.json")


@case("training: --config not a preset", "tiny_nope", "presets", "tiny_sft")
def _config_preset(env, tmp):
    return _stage(env, tmp, config="tiny_nope")


@case("training: --config invalid JSON", "bad.json", "not valid JSON", "fix the file")
def _config_json(env, tmp):
    (tmp / "bad.json").write_text('{"run": {"steps": 3,}}')
    return _stage(env, tmp, config=tmp / "bad.json")


@case("training: --config empty file", "empty.json", "empty")
def _config_empty(env, tmp):
    (tmp / "empty.json").write_text("")
    return _stage(env, tmp, config=tmp / "empty.json")


@case("training: --config a folder", "--config", "folder", "JSON file")
def _config_folder(env, tmp):
    (tmp / "cfg").mkdir()
    return _stage(env, tmp, config=tmp / "cfg")


@case("training: --config a FIFO", "cfg.json", "not a regular file")
def _config_fifo(env, tmp):
    return _stage(env, tmp, config=fifo(tmp / "cfg.json"))


@case("training: --config holding a list", "list.json", "JSON object")
def _config_list(env, tmp):
    (tmp / "list.json").write_text("[1, 2]")
    return _stage(env, tmp, config=tmp / "list.json")


@case("training: --config with an unknown key", "optim.learning_rate", "fix.json", "valid keys")
def _config_unknown(env, tmp):
    (tmp / "fix.json").write_text(json.dumps({"optim": {"learning_rate": 1e-4}}))
    return _stage(env, tmp, config=tmp / "fix.json")


@case("training: --config with a string number", "run.steps", "'10'", "fix it in")
def _config_string_number(env, tmp):
    cfg = json.loads(Path(__file__).resolve().parents[1].joinpath(
        "chameleon_core/training/presets/tiny_sft.json").read_text())
    cfg["run"]["steps"] = "10"
    (tmp / "s.json").write_text(json.dumps(cfg))
    return _stage(env, tmp, config=tmp / "s.json")


@case("training: no subcommand", "command")
def _no_subcommand(env, tmp):
    return training()


@case("training: --log-level LOUD", "--log-level", "LOUD")
def _log_level(env, tmp):
    return training("--log-level", "LOUD", "sft", "--config", "tiny_sft")


# training: paths, weights and the latent cache, checked before the run starts ---------------------------------------


@case("training sft: run.out is a file", "run.out", "file")
def _out_file(env, tmp):
    (tmp / "out").write_text("x")
    return training("sft", "--config", "tiny_sft", "--set", f"data.cache={env.cache}", "--set", f"run.out={tmp / 'out'}")


@case("training sft: run.out under a file", "run.out", "is a file, not a folder")
def _out_under_file(env, tmp):
    (tmp / "out").write_text("x")
    return training("sft", "--config", "tiny_sft", "--set", f"data.cache={env.cache}", "--set",
                    f"run.out={tmp / 'out' / 'run'}")


@case("training sft: run.out not writable", "run.out", "not writable")
def _out_readonly(env, tmp):
    if IS_ROOT:
        pytest.skip("root writes anywhere")
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return training("sft", "--config", "tiny_sft", "--set", f"data.cache={env.cache}", "--set",
                    f"run.out={tmp / 'ro' / 'run'}")


@case("training sft: model.init not set", "model.init is not set", "--set model.init=")
def _init_null(env, tmp):
    return _stage(env, tmp, "model.init=null")


@case("training sft: model.init missing file", "model.init", "nowhere.safetensors", "check the path")
def _init_missing(env, tmp):
    return _stage(env, tmp, f"model.init={tmp / 'nowhere.safetensors'}")


@case("training forcing: model.init truncated", "model.init", "student.safetensors", "truncated", "re-download")
def _init_truncated(env, tmp):
    return _stage(env, tmp, f"model.init={truncate(env.copy(env.student, tmp))}", stage="forcing")


@case("training sft: model.init empty .pt", "model.init", "train.pt", "empty")
def _init_empty(env, tmp):
    return _stage(env, tmp, f"model.init={empty(env.copy(env.train_pt, tmp))}")


@case("training sft: model.init text file", "model.init", "student.safetensors", "not a safetensors file")
def _init_text(env, tmp):
    return _stage(env, tmp, f"model.init={text(env.copy(env.student, tmp))}")


@case("training sft: model.init a FIFO", "model.init", "student.safetensors", "not a regular file")
def _init_fifo(env, tmp):
    return _stage(env, tmp, f"model.init={fifo(tmp / 'student.safetensors')}")


@case("training sft: model.init a VAE file", "model.init", "wan2.2_vae.safetensors", "transformer")
def _init_vae(env, tmp):
    return _stage(env, tmp, f"model.init={env.vae}")


@case("training sft: model.init a folder without a checkpoint", "model.init", "no transformer checkpoint")
def _init_folder(env, tmp):
    (tmp / "weights").mkdir()
    return _stage(env, tmp, f"model.init={tmp / 'weights'}")


@case("training sft: model.init a pickle holding code", "model.init", "evil.pt", "refusing")
def _init_pickle(env, tmp):
    return _stage(env, tmp, f"model.init={evil_pickle(tmp / 'evil.pt', tmp / MARKER)}")


@case("training sft: data.cache missing", "data.cache", "nocache", "prepare")
def _cache_missing(env, tmp):
    return _stage(env, tmp, f"data.cache={tmp / 'nocache'}")


@case("training sft: data.cache a file", "data.cache", "is a file")
def _cache_file(env, tmp):
    (tmp / "cache").write_text("x")
    return _stage(env, tmp, f"data.cache={tmp / 'cache'}")


@case("training sft: data.cache without manifest", "data.cache", "manifest.json", "prepare again")
def _cache_no_manifest(env, tmp):
    (tmp / "cache").mkdir()
    return _stage(env, tmp, f"data.cache={tmp / 'cache'}")


def _cache_copy(env: Env, tmp: Path) -> Path:
    return env.copy(env.cache, tmp, "cache")


@case("training sft: damaged manifest", "manifest.json", "damaged", "prepare again")
def _manifest_damaged(env, tmp):
    c = _cache_copy(env, tmp)
    truncate(c / "manifest.json")
    return _stage(env, tmp, f"data.cache={c}")


@case("training sft: manifest without items", "manifest.json", "no list of items", "prepare again")
def _manifest_no_items(env, tmp):
    c = _cache_copy(env, tmp)
    (c / "manifest.json").write_text(json.dumps({"version": 1}))
    return _stage(env, tmp, f"data.cache={c}")


@case("training sft: manifest with zero items", "holds no items", "prepare")
def _manifest_zero(env, tmp):
    c = _cache_copy(env, tmp)
    (c / "manifest.json").write_text(json.dumps({"version": 1, "items": []}))
    return _stage(env, tmp, f"data.cache={c}")


@case("training sft: manifest item malformed", "manifest item 0", "prepare again")
def _manifest_item(env, tmp):
    c = _cache_copy(env, tmp)
    meta = json.loads((c / "manifest.json").read_text())
    meta["items"][0] = {"key": "x"}
    (c / "manifest.json").write_text(json.dumps(meta))
    return _stage(env, tmp, f"data.cache={c}")


def _item(c: Path) -> Path:
    return sorted((c / "items").glob("*.safetensors"))[0]


@case("training sft: cache item missing", "0000001_clip0", "does not exist", "prepare again")
def _item_missing(env, tmp):
    c = _cache_copy(env, tmp)
    _item(c).unlink()
    return _stage(env, tmp, f"data.cache={c}")


@case("training sft: cache item truncated", "0000001_clip0", "truncated", "prepare again")
def _item_truncated(env, tmp):
    c = _cache_copy(env, tmp)
    truncate(_item(c))
    return _stage(env, tmp, f"data.cache={c}")


@case("training sft: cache item a text file", "0000001_clip0", "not a safetensors file")
def _item_text(env, tmp):
    c = _cache_copy(env, tmp)
    text(_item(c))
    return _stage(env, tmp, f"data.cache={c}")


@case("training sft: cache item a FIFO", "0000001_clip0", "not a regular file")
def _item_fifo(env, tmp):
    c = _cache_copy(env, tmp)
    fifo(_item(c))
    return _stage(env, tmp, f"data.cache={c}")


def _rewrite_item(path: Path, change: Callable[[dict], None]) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    change(tensors)
    save_file(tensors, str(path), metadata=meta)


@case("training sft: cache item lacks a tensor", "0000001_clip0", "text_full", "prepare again")
def _item_tensor(env, tmp):
    c = _cache_copy(env, tmp)
    _rewrite_item(_item(c), lambda t: t.pop("text_full"))
    return _stage(env, tmp, f"data.cache={c}")


@case("training sft: cache item shape differs from the manifest", "0000001_clip0", "differ from the manifest")
def _item_shape(env, tmp):
    c = _cache_copy(env, tmp)
    _rewrite_item(_item(c), lambda t: t.update(video=t["video"][:, :2].contiguous()))
    return _stage(env, tmp, f"data.cache={c}")


@case("training sft: cache prompt width differs from the model", "data.cache", "text_dim=64", "random:64")
def _cache_text_dim(env, tmp):
    c = _cache_copy(env, tmp)
    for item in (c / "items").glob("*.safetensors"):
        _rewrite_item(item, lambda t: t.update({k: v[:, :32].contiguous() for k, v in t.items() if k.startswith("text")}))
    return _stage(env, tmp, f"data.cache={c}")


@case("training sft: cache latent channels differ from the model", "data.cache", "16-channel", "48-channel")
def _cache_channels(env, tmp):
    c = _cache_copy(env, tmp)
    meta = json.loads((c / "manifest.json").read_text())
    for entry in meta["items"]:
        _rewrite_item(c / entry["file"], lambda t: t.update(
            {k: v[:16].contiguous() for k, v in t.items() if k in ("video", "reference", "garment")}))
        entry["latent_shape"][0] = 16
    (c / "manifest.json").write_text(json.dumps(meta))
    return _stage(env, tmp, f"data.cache={c}")


@case("training sft: data.batch_size above every bucket", "data.batch_size=4", "bucket", "--set data.batch_size=2")
def _batch_bucket(env, tmp):
    return _stage(env, tmp, "data.batch_size=4")


@case("training forcing: latent frames not a multiple of the chunk", "forcing.chunk_frames=2", "multiple")
def _chunk_multiple(env, tmp):
    return _stage(env, tmp, "forcing.chunk_frames=2", stage="forcing")


@case("training sft: a batch that the processes cannot split", "data.batch_size=2", "3 processes")
def _world_split(env, tmp):
    os.environ["WORLD_SIZE"] = "3"
    try:
        return _stage(env, tmp)()
    finally:
        del os.environ["WORLD_SIZE"]


# training: dmd's teacher, reward, VAE and negative prompt ------------------------------------------------------------


@case("training dmd: dmd.teacher not set", "dmd.teacher is not set", "--set dmd.teacher=")
def _teacher_null(env, tmp):
    return _stage(env, tmp, "dmd.teacher=null", stage="dmd")


@case("training dmd: dmd.teacher missing", "dmd.teacher", "teacher.safetensors", "check the path")
def _teacher_missing(env, tmp):
    return _stage(env, tmp, f"dmd.teacher={tmp / 'teacher.safetensors'}", stage="dmd")


@case("training dmd: dmd.teacher a VAE file", "dmd.teacher", "wan2.2_vae.safetensors", "transformer")
def _teacher_wrong(env, tmp):
    return _stage(env, tmp, f"dmd.teacher={env.vae}", stage="dmd")


@case("training dmd: dmd.teacher truncated", "dmd.teacher", "truncated")
def _teacher_truncated(env, tmp):
    return _stage(env, tmp, f"dmd.teacher={truncate(env.copy(env.student, tmp))}", stage="dmd")


@case("training dmd: dmd.reward folder missing", "dmd.reward", "reward", "not found", "'none'")
def _reward_missing(env, tmp):
    return _stage(env, tmp, f"dmd.reward={tmp / 'reward'}", stage="dmd")


@case("training dmd: dmd.reward folder empty", "reward", "one aesthetic MLP file", "CLIP")
def _reward_empty(env, tmp):
    (tmp / "reward").mkdir()
    return _stage(env, tmp, f"dmd.reward={tmp / 'reward'}", stage="dmd")


def _reward_folder(env: Env, tmp: Path, mlp_fault: Callable[[Path], Path] | None = None, *,
                   mlp_name: str = "aesthetic.safetensors") -> Path:
    folder = tmp / "reward"
    (folder / "clip").mkdir(parents=True)
    (folder / "clip" / "config.json").write_text(json.dumps({"model_type": "clip_vision_model",
                                                              "projection_dim": 768}))
    save_file({"w": torch.zeros(2)}, str(folder / "clip" / "model.safetensors"))
    mlp = folder / mlp_name
    save_file(_aesthetic_state(768), str(mlp))
    if mlp_fault is not None:
        mlp_fault(mlp)
    return folder


@case("training dmd: reward MLP truncated", "dmd.reward", "aesthetic.safetensors", "truncated")
def _reward_truncated(env, tmp):
    return _stage(env, tmp, f"dmd.reward={_reward_folder(env, tmp, truncate)}", stage="dmd")


@case("training dmd: reward MLP with NaN", "dmd.reward", "aesthetic.safetensors", "NaN")
def _reward_nan(env, tmp):
    return _stage(env, tmp, f"dmd.reward={_reward_folder(env, tmp, with_nan)}", stage="dmd")


@case("training dmd: reward MLP a pickle holding code", "dmd.reward", "aesthetic.pth", "refusing")
def _reward_pickle(env, tmp):
    folder = _reward_folder(env, tmp, lambda p: evil_pickle(p, tmp / MARKER), mlp_name="aesthetic.pth")
    return _stage(env, tmp, f"dmd.reward={folder}", stage="dmd")


@case("training dmd: reward CLIP config damaged", "dmd.reward", "config.json", "damaged")
def _reward_clip_config(env, tmp):
    folder = _reward_folder(env, tmp)
    (folder / "clip" / "config.json").write_text("{not json")
    return _stage(env, tmp, f"dmd.reward={folder}", stage="dmd")


@case("training dmd: reward CLIP of the wrong width", "dmd.reward", "512", "ViT-L/14")
def _reward_clip_width(env, tmp):
    folder = _reward_folder(env, tmp)
    (folder / "clip" / "config.json").write_text(json.dumps({"projection_dim": 512}))
    return _stage(env, tmp, f"dmd.reward={folder}", stage="dmd")


@case("training dmd: dmd.extra.vae missing", "dmd.extra.vae", "vae.pth", "wan2.2_vae.safetensors")
def _dmd_vae_missing(env, tmp):
    return _stage(env, tmp, f"dmd.extra.vae={tmp / 'vae.pth'}", stage="dmd")


@case("training dmd: dmd.extra.vae a transformer file", "dmd.extra.vae", "student.safetensors", "not a Wan VAE")
def _dmd_vae_transformer(env, tmp):
    return _stage(env, tmp, f"dmd.extra.vae={env.student}", stage="dmd")


@case("training dmd: dmd.extra.vae random:nope", "dmd.extra.vae", "random:nope", "wan2.2-tiny")
def _dmd_vae_preset(env, tmp):
    return _stage(env, tmp, "dmd.extra.vae=random:nope", stage="dmd")


@case("training dmd: dmd.extra.negative missing", "dmd.extra.negative", "neg.safetensors")
def _dmd_negative(env, tmp):
    return _stage(env, tmp, f"dmd.extra.negative={tmp / 'neg.safetensors'}", stage="dmd")


@case("training dmd: dmd.negative_prompt as text", "dmd.negative_prompt", "prompt_embeds", "dmd.extra.negative")
def _dmd_negative_text(env, tmp):
    return _stage(env, tmp, "dmd.negative_prompt=blurry, low quality", stage="dmd")


# training prepare: the CSV, its files, the VAE, the text encoder, the output -----------------------------------------


def _prepare(env: Env, tmp: Path, csv_path: Path | None = None, **options: object) -> Callable[[], Outcome]:
    args = {"--csv": csv_path or env.csv, "--out": tmp / "cache", "--vae": "random:wan2.2-tiny",
            "--text-encoder": "random:64", "--frames": 9, "--width": 32, "--height": 64, "--dtype": "fp32",
            "--device": "cpu"}
    flags = []
    for k, v in options.items():
        if v is True:
            flags.append("--" + k.replace("_", "-"))
        else:
            args["--" + k.replace("_", "-")] = v
    return training("--log-level", "WARNING", "prepare", *[x for kv in args.items() for x in kv], *flags)


def _clips(env: Env, tmp: Path) -> Path:
    return env.copy(env.csv.parent, tmp, "clips") / env.csv.name


@case("training prepare: --csv missing", "--csv", "nowhere.csv", "video, prompt, width, height")
def _csv_missing(env, tmp):
    return _prepare(env, tmp, tmp / "nowhere.csv")


@case("training prepare: --csv empty", "--csv", "empty.csv", "empty", "header row")
def _csv_empty(env, tmp):
    (tmp / "empty.csv").write_text("")
    return _prepare(env, tmp, tmp / "empty.csv")


@case("training prepare: --csv wrong header", "--csv", "wrong.csv", "missing column(s)", "'video'")
def _csv_header(env, tmp):
    (tmp / "wrong.csv").write_text("clip,caption\nx.mp4,hello\n")
    return _prepare(env, tmp, tmp / "wrong.csv")


@case("training prepare: --csv header only", "--csv", "head.csv", "no rows")
def _csv_header_only(env, tmp):
    (tmp / "head.csv").write_text("video,prompt,width,height\n")
    return _prepare(env, tmp, tmp / "head.csv")


@case("training prepare: --csv a folder", "--csv", "folder")
def _csv_folder(env, tmp):
    (tmp / "data.csv").mkdir()
    return _prepare(env, tmp, tmp / "data.csv")


@case("training prepare: --csv a FIFO", "--csv", "not a regular file")
def _csv_fifo(env, tmp):
    return _prepare(env, tmp, fifo(tmp / "data.csv"))


@case("training prepare: --csv not UTF-8", "--csv", "bin.csv", "UTF-8")
def _csv_binary(env, tmp):
    (tmp / "bin.csv").write_bytes(b"video,prompt,width,height\n\xff\xfe\x00bad,\x81,1,2\n")
    return _prepare(env, tmp, tmp / "bin.csv")


@case("training prepare: --csv width not a number", "row 1", "width/height must be integers")
def _csv_width(env, tmp):
    c = _clips(env, tmp)
    rows = list(csv.DictReader(c.open()))
    rows[0]["width"] = "wide"
    with c.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return _prepare(env, tmp, c)


@case("training prepare: bad caption JSON", "row 1", "caption JSON", "--skip-bad")
def _csv_caption(env, tmp):
    c = _clips(env, tmp)
    rows = list(csv.DictReader(c.open()))
    rows[0]["prompt"] = "{not json"
    with c.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return _prepare(env, tmp, c)


@case("training prepare: missing mp4", "row 1", "clip0.mp4", "not found", "--skip-bad")
def _mp4_missing(env, tmp):
    c = _clips(env, tmp)
    (c.parent / "clip0.mp4").unlink()
    return _prepare(env, tmp, c)


@case("training prepare: corrupt mp4", "row 1", "clip0.mp4", "re-encode")
def _mp4_corrupt(env, tmp):
    c = _clips(env, tmp)
    text(c.parent / "clip0.mp4")
    return _prepare(env, tmp, c)


@case("training prepare: empty mp4", "row 2", "clip1.mp4", "re-encode")
def _mp4_empty(env, tmp):
    c = _clips(env, tmp)
    empty(c.parent / "clip1.mp4")
    return _prepare(env, tmp, c)


@case("training prepare: truncated mp4", "row 1", "clip0.mp4")
def _mp4_truncated(env, tmp):
    c = _clips(env, tmp)
    truncate(c.parent / "clip0.mp4")
    return _prepare(env, tmp, c)


@case("training prepare: --frames beyond the clip", "--frames 17", "9 frames", "at most 9")
def _frames_beyond(env, tmp):
    return _prepare(env, tmp, frames=17)


@case("training prepare: missing _src.png", "clip0_src.png", "not found", "--skip-bad")
def _src_missing(env, tmp):
    c = _clips(env, tmp)
    (c.parent / "clip0_src.png").unlink()
    return _prepare(env, tmp, c)


@case("training prepare: missing _cloth.png", "clip1_cloth.png", "not found")
def _cloth_missing(env, tmp):
    c = _clips(env, tmp)
    (c.parent / "clip1_cloth.png").unlink()
    return _prepare(env, tmp, c)


@case("training prepare: corrupt _src.png", "clip0_src.png", "valid PNG")
def _src_corrupt(env, tmp):
    c = _clips(env, tmp)
    text(c.parent / "clip0_src.png")
    return _prepare(env, tmp, c)


@case("training prepare: --skip-bad with every row bad", "every row is bad", "fix the CSV")
def _skip_all(env, tmp):
    c = _clips(env, tmp)
    for p in c.parent.glob("*_src.png"):
        p.unlink()
    return _prepare(env, tmp, c, skip_bad=True)


@case("training prepare: --frames 10 (not 4k+1)", "--frames 10", "4k+1", "--frames 9")
def _frames_10(env, tmp):
    return _prepare(env, tmp, frames=10)


@case("training prepare: --frames 0", "--frames 0", "4k+1")
def _frames_0(env, tmp):
    return _prepare(env, tmp, frames=0)


@case("training prepare: --frames -3", "--frames -3", "4k+1")
def _frames_neg(env, tmp):
    return _prepare(env, tmp, frames=-3)


@case("training prepare: --width 30", "--width 30", "multiple of 32", "--width 32")
def _width_30(env, tmp):
    return _prepare(env, tmp, width=30)


@case("training prepare: --height 0", "--height 0", "multiple of 32")
def _height_0(env, tmp):
    return _prepare(env, tmp, height=0)


@case("training prepare: --width 99968", "--width 99968", "at most")
def _width_huge(env, tmp):
    return _prepare(env, tmp, width=99968)


@case("training prepare: --vae missing", "--vae", "novae.safetensors", "wan2.2_vae.safetensors")
def _vae_missing(env, tmp):
    return _prepare(env, tmp, vae=tmp / "novae.safetensors")


@case("training prepare: --vae a training .pt (no which= advice)", "--vae", "train.pt", "Wan VAE itself")
def _vae_train_pt(env, tmp):
    out = _prepare(env, tmp, vae=env.train_pt)()
    return out if "which=" not in out.message else Outcome(2, out.message + " (suggests which=)", None)


@case("training prepare: --vae a transformer file", "--vae", "student.safetensors", "not a Wan VAE")
def _vae_transformer(env, tmp):
    return _prepare(env, tmp, vae=env.student)


@case("training prepare: --vae truncated", "--vae", "wan2.2_vae.safetensors", "truncated")
def _vae_truncated(env, tmp):
    return _prepare(env, tmp, vae=truncate(env.copy(env.vae, tmp)))


@case("training prepare: --vae a FIFO", "--vae", "not a regular file")
def _vae_fifo(env, tmp):
    return _prepare(env, tmp, vae=fifo(tmp / "wan2.2_vae.safetensors"))


@case("training prepare: --vae random:nope", "--vae", "random:nope", "wan2.2-tiny")
def _vae_preset(env, tmp):
    return _prepare(env, tmp, vae="random:nope")


@case("training prepare: --text-encoder missing", "--text-encoder", "umt5", "does not exist", "google/umt5-xxl")
def _te_missing(env, tmp):
    return _prepare(env, tmp, text_encoder=tmp / "umt5")


@case("training prepare: --text-encoder empty folder", "--text-encoder", "umt5", "no umT5 encoder")
def _te_empty(env, tmp):
    (tmp / "umt5").mkdir()
    return _prepare(env, tmp, text_encoder=tmp / "umt5")


@case("training prepare: --text-encoder random:abc", "--text-encoder", "random:abc", "random:DIM")
def _te_random(env, tmp):
    return _prepare(env, tmp, text_encoder="random:abc")


@case("training prepare: --out a file", "--out", "existing file")
def _prep_out_file(env, tmp):
    (tmp / "cache").write_text("x")
    return _prepare(env, tmp)


@case("training prepare: --out holding a cache of other settings", "--out", "frames 9", "now 5", "new --out")
def _prep_out_mixed(env, tmp):
    env.copy(env.cache, tmp, "cache")
    return _prepare(env, tmp, frames=5)


@case("training prepare: --device cuda without CUDA", "--device", "cuda", "cpu")
def _prep_cuda(env, tmp):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return _prepare(env, tmp, device="cuda")


@case("training prepare: --device tpu", "--device", "tpu", "cpu")
def _prep_tpu(env, tmp):
    return _prepare(env, tmp, device="tpu")


@case("training bench: --steps 0", "--steps 0", "--steps 5")
def _bench_steps(env, tmp):
    return training("bench", "--stage", "sft", "--steps", "0")


@case("training bench: --frames 10", "--frames 10", "4k+1")
def _bench_frames(env, tmp):
    return training("bench", "--stage", "sft", "--frames", "10")


@case("training bench: --width 30", "--width 30", "multiple of 32")
def _bench_width(env, tmp):
    return training("bench", "--stage", "sft", "--width", "30")


@case("training bench: --set optim.lr=abc", "optim.lr", "'abc'")
def _bench_set(env, tmp):
    return training("bench", "--stage", "forcing", "--set", "optim.lr=abc")


# evaluation: hgc ---------------------------------------------------------------------------------------------------


def _hgc(env: Env, tmp: Path, meta: Path | None = None, videos: Path | None = None, out: Path | None = None,
         *extra: object) -> Callable[[], Outcome]:
    return evaluation("hgc", "--meta", meta or env.bench, "--videos", videos or env.bench_videos, "--out",
                      out or tmp / "r.json", *extra)


@case("eval hgc: --meta missing", "--meta", "nowhere.csv", "meta_data.csv")
def _meta_missing(env, tmp):
    return _hgc(env, tmp, tmp / "nowhere.csv")


@case("eval hgc: --meta empty", "--meta", "meta.csv", "empty")
def _meta_empty(env, tmp):
    return _hgc(env, tmp, empty(tmp / "meta.csv"))


@case("eval hgc: --meta a folder", "meta.csv", "folder")
def _meta_folder(env, tmp):
    (tmp / "meta.csv").mkdir()
    return _hgc(env, tmp, tmp / "meta.csv")


@case("eval hgc: --meta a FIFO", "meta.csv", "not a regular file")
def _meta_fifo(env, tmp):
    return _hgc(env, tmp, fifo(tmp / "meta.csv"))


@case("eval hgc: --meta wrong header", "meta.csv", "no column 'prompt'", "--prompt-column")
def _meta_header(env, tmp):
    (tmp / "meta.csv").write_text("a,b\n1,2\n")
    return _hgc(env, tmp, tmp / "meta.csv")


@case("eval hgc: --meta header only", "meta.csv", "no rows")
def _meta_header_only(env, tmp):
    (tmp / "meta.csv").write_text("prompt,src_image,cloth_image\n")
    return _hgc(env, tmp, tmp / "meta.csv")


@case("eval hgc: --meta short row", "meta.csv", "row 0", "cloth_image")
def _meta_short(env, tmp):
    (tmp / "meta.csv").write_text("prompt,src_image,cloth_image\nhello,a.png\n")
    return _hgc(env, tmp, tmp / "meta.csv")


@case("eval hgc: --meta not UTF-8", "meta.csv", "UTF-8")
def _meta_binary(env, tmp):
    (tmp / "meta.csv").write_bytes(b"prompt,src_image,cloth_image\n\xff\xfe,\x81,x\n")
    return _hgc(env, tmp, tmp / "meta.csv")


@case("eval hgc: --videos missing", "--videos", "novideos", "not a folder")
def _videos_missing(env, tmp):
    return _hgc(env, tmp, None, tmp / "novideos")


@case("eval hgc: --out a folder (failed after scoring)", "--out", "is a folder", "results.json")
def _hgc_out_folder(env, tmp):
    (tmp / "r").mkdir()
    return _hgc(env, tmp, None, None, tmp / "r")


@case("eval hgc: --out under a file", "--out", "is a file, not a folder")
def _hgc_out_under(env, tmp):
    (tmp / "f").write_text("x")
    return _hgc(env, tmp, None, None, tmp / "f" / "r.json")


@case("eval hgc: --device bogus", "--device", "bogus", "cpu")
def _hgc_device(env, tmp):
    return _hgc(env, tmp, None, None, None, "--device", "bogus")


@case("eval hgc: --flow-size 0", "--flow-size", "0")
def _hgc_flow(env, tmp):
    return _hgc(env, tmp, None, None, None, "--flow-size", "0")


@case("eval hgc: --models-dir a file", "--models-dir", "not a folder")
def _hgc_models_dir(env, tmp):
    (tmp / "models").write_text("x")
    return _hgc(env, tmp, None, None, None, "--models-dir", tmp / "models")


def _with_clip(env: Env) -> Path:
    if env.clip is None:
        pytest.skip("the CLIP metrics need transformers")
    return env.clip


def _aesthetic_case(fault: Callable[[Path], Path], name: str = "aesthetic.safetensors"):
    def run(env, tmp):
        clip = _with_clip(env)
        path = tmp / name
        if fault is not fifo:
            save_file(_aesthetic_state(8), str(path))
        fault(path)
        return _hgc(env, tmp, None, None, None, "--clip", clip, "--aesthetic", path)

    return run


case("eval hgc: --aesthetic truncated", "--aesthetic", "aesthetic.safetensors", "truncated")(_aesthetic_case(truncate))
case("eval hgc: --aesthetic empty", "--aesthetic", "aesthetic.safetensors", "re-download")(_aesthetic_case(empty))
case("eval hgc: --aesthetic text .pth", "--aesthetic", "aesthetic.pth", "not a PyTorch checkpoint")(
    _aesthetic_case(text, "aesthetic.pth"))
case("eval hgc: --aesthetic a FIFO", "--aesthetic", "aesthetic.safetensors", "not a regular file")(
    _aesthetic_case(fifo))
case("eval hgc: --aesthetic with NaN", "--aesthetic", "aesthetic.safetensors", "NaN")(_aesthetic_case(with_nan))


@case("eval hgc: --aesthetic a pickle holding code", "--aesthetic", "evil.pth", "refusing")
def _aesthetic_pickle(env, tmp):
    clip = _with_clip(env)
    return _hgc(env, tmp, None, None, None, "--clip", clip, "--aesthetic", evil_pickle(tmp / "evil.pth", tmp / MARKER))


@case("eval hgc: --aesthetic a folder", "--aesthetic", "folder")
def _aesthetic_folder(env, tmp):
    (tmp / "aesthetic.pth").mkdir()
    return _hgc(env, tmp, None, None, None, "--aesthetic", tmp / "aesthetic.pth")


@case("eval hgc: --clip a file", "--clip", "clip.bin", "a folder")
def _clip_file(env, tmp):
    (tmp / "clip.bin").write_text("x")
    return _hgc(env, tmp, None, None, None, "--clip", tmp / "clip.bin")


@case("eval hgc: --clip empty folder", "--clip", "cannot load", "openai/clip-vit-large-patch14")
def _clip_empty(env, tmp):
    pytest.importorskip("transformers")
    (tmp / "clip").mkdir()
    return _hgc(env, tmp, None, None, None, "--clip", tmp / "clip")


@case("eval hgc: --clip weights truncated", "--clip", "clip", "cannot load")
def _clip_truncated(env, tmp):
    folder = env.copy(_with_clip(env), tmp, "clip")
    truncate(folder / "model.safetensors")
    return _hgc(env, tmp, None, None, None, "--clip", folder)


@case("eval hgc: --clip config a FIFO", "config.json", "not a regular file")
def _clip_fifo(env, tmp):
    folder = env.copy(_with_clip(env), tmp, "clip")
    fifo(folder / "config.json")
    return _hgc(env, tmp, None, None, None, "--clip", folder)


@case("eval hgc: --clip with NaN weights", "--clip", "NaN")
def _clip_nan(env, tmp):
    folder = env.copy(_with_clip(env), tmp, "clip")
    with_nan(folder / "model.safetensors")
    return _hgc(env, tmp, None, None, None, "--clip", folder)


@case("eval hgc: --clip weights a pickle holding code", "--clip", "clip")
def _clip_pickle(env, tmp):
    folder = env.copy(_with_clip(env), tmp, "clip")
    (folder / "model.safetensors").unlink()
    evil_pickle(folder / "pytorch_model.bin", tmp / MARKER)
    return _hgc(env, tmp, None, None, None, "--clip", folder)


@case("eval hgc: --dino empty folder", "--dino", "cannot load", "facebook/dinov2-base")
def _dino_empty(env, tmp):
    pytest.importorskip("transformers")
    (tmp / "dino").mkdir()
    return _hgc(env, tmp, None, None, None, "--dino", tmp / "dino")


# evaluation: world -------------------------------------------------------------------------------------------------


def _world(env: Env, tmp: Path, videos: Path, *extra: object, data: Path | None = None,
           out: Path | None = None) -> Callable[[], Outcome]:
    return evaluation("world", "--data", data or env.world, "--videos", videos, "--out", out or tmp / "s.json", *extra)


def _world_video(env: Env, tmp: Path, frames: int | None = None) -> Path:
    from chameleon_core.eval.videos import read_video
    from chameleon_core.world.dataset import write_video

    (tmp / "gen").mkdir()
    target = tmp / "gen" / env.world_video.name
    if frames is None:
        shutil.copy(env.world_video, target)
    else:
        write_video(target, torch.from_numpy(read_video(env.world_video)[:frames]))
    return target


@case("eval world: a 2-frame video (scored motion agreement 0.996)", "test_00000.mp4", "2 frame", "at least 5")
def _world_two(env, tmp):
    _world_video(env, tmp, 2)
    return _world(env, tmp, tmp / "gen")


@case("eval world: a 4-frame video of a 9-frame cycle", "test_00000.mp4", "4 frame", "at least 5")
def _world_four(env, tmp):
    _world_video(env, tmp, 4)
    return _world(env, tmp, tmp / "gen")


@case("eval world: a 1-frame video", "test_00000.mp4", "1 frame")
def _world_one(env, tmp):
    _world_video(env, tmp, 1)
    return _world(env, tmp, tmp / "gen")


@case("eval world: a corrupt mp4", "test_00000.mp4", "re-export")
def _world_corrupt(env, tmp):
    text(_world_video(env, tmp))
    return _world(env, tmp, tmp / "gen")


@case("eval world: an empty mp4", "test_00000.mp4", "re-export")
def _world_empty(env, tmp):
    empty(_world_video(env, tmp))
    return _world(env, tmp, tmp / "gen")


@case("eval world: --out a folder", "--out", "is a folder", "scores.json")
def _world_out(env, tmp):
    _world_video(env, tmp)
    (tmp / "s").mkdir()
    return _world(env, tmp, tmp / "gen", out=tmp / "s")


@case("eval world: --switch-frame 0", "--switch-frame 0", ">= 1")
def _world_switch0(env, tmp):
    _world_video(env, tmp)
    return _world(env, tmp, tmp / "gen", "--switch-frame", 0)


@case("eval world: --switch-frame past the video", "test_00000.mp4", "switch frame 100", "1..8")
def _world_switch_past(env, tmp):
    _world_video(env, tmp)
    return _world(env, tmp, tmp / "gen", "--switch-frame", 100)


@case("eval world: damaged metadata", "test_00000.json", "damaged", "write the dataset again")
def _world_meta(env, tmp):
    data = env.copy(env.world, tmp, "data")
    truncate(data / "test_00000.json")
    _world_video(env, tmp)
    return _world(env, tmp, tmp / "gen", data=data)


@case("eval world: metadata of another kind", "test_00000.json", "damaged")
def _world_meta_kind(env, tmp):
    data = env.copy(env.world, tmp, "data")
    (data / "test_00000.json").write_text(json.dumps({"frames": 9}))
    _world_video(env, tmp)
    return _world(env, tmp, tmp / "gen", data=data)


@case("eval world: --videos without mp4", "no .mp4 videos", "<stem>.mp4")
def _world_no_videos(env, tmp):
    (tmp / "gen").mkdir()
    return _world(env, tmp, tmp / "gen")


@case("eval: no subcommand", "no subcommand", "hgc", "world")
def _eval_none(env, tmp):
    return evaluation()


@case("eval: unknown subcommand", "unknown subcommand", "hgc")
def _eval_unknown(env, tmp):
    return evaluation("scores")


# the tiny decoder: load_taehv and the stream command's --decoder ------------------------------------------------------


def _decoder_file(env: Env, tmp: Path, fault: Callable[[Path], Path], name: str = "taew2_2.safetensors") -> Path:
    path = tmp / name
    if fault in (fifo, _folder):
        pass
    elif name.endswith(".pth"):
        torch.save(load_file(str(env.taehv)), path)
    else:
        shutil.copy(env.taehv, path)
    return fault(path)


def _load_taehv(path: Path) -> Outcome:
    from chameleon_core.taehv import load_taehv

    return library(lambda: load_taehv(path))


def _ok(p: Path) -> Path:
    return p


def _folder(p: Path) -> Path:
    p.mkdir()
    return p


def _wrong_layout(p: Path) -> Path:
    save_file({"decoder.conv1.weight": torch.zeros(2, 2)}, str(p))
    return p


DECODER_FAULTS = {
    # name: (fault, file name, expected substrings)
    "truncated": (truncate, "taew2_2.safetensors", ("taew2_2.safetensors", "truncated", "re-download")),
    "empty": (empty, "taew2_2.safetensors", ("taew2_2.safetensors", "re-download")),
    "text": (text, "taew2_2.safetensors", ("taew2_2.safetensors", "not a safetensors file")),
    "FIFO": (fifo, "taew2_2.safetensors", ("taew2_2.safetensors", "not a regular file")),
    "folder": (_folder, "taew2_2.safetensors", ("taew2_2.safetensors", "folder")),
    "NaN weights (decoded 21 black frames)": (with_nan, "taew2_2.safetensors", ("taew2_2.safetensors", "NaN")),
    "truncated .pth": (truncate, "taew2_2.pth", ("taew2_2.pth", "re-download")),
    "text .pth": (text, "taew2_2.pth", ("taew2_2.pth", "not a PyTorch checkpoint")),
    "another layout": (_wrong_layout, "taew2_2.safetensors", ("taew2_2.safetensors", "not a TAEHV decoder")),
    "wrong suffix": (_ok, "taew2_2.txt", ("taew2_2.txt", "suffix", "taew2_2.safetensors")),
}

for _name, (_fault, _file, _expect) in DECODER_FAULTS.items():
    def _load_case(env, tmp, fault=_fault, file=_file):
        return _load_taehv(_decoder_file(env, tmp, fault, file))

    def _cli_case(env, tmp, fault=_fault, file=_file):
        return _stream(env, tmp, "--decoder", _decoder_file(env, tmp, fault, file))

    case(f"tiny decoder load_taehv: {_name}", *_expect, error=CheckpointError)(_load_case)
    case(f"stream --decoder: {_name}", *_expect)(_cli_case)


@case("tiny decoder load_taehv: missing file", "taew2_2.safetensors", "models/vae_approx",
      error=CheckpointNotFoundError)
def _taehv_missing(env, tmp):
    return _load_taehv(tmp / "taew2_2.safetensors")


@case("tiny decoder load_taehv: a pickle holding code", "evil.pth", "refusing",
      error=CheckpointError)
def _taehv_pickle(env, tmp):
    return _load_taehv(evil_pickle(tmp / "evil.pth", tmp / MARKER))


@case("tiny decoder load_taehv: device cuda without CUDA", "cuda", "cpu",
      error=CheckpointError)
def _taehv_cuda(env, tmp):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from chameleon_core.taehv import load_taehv

    return library(lambda: load_taehv(env.taehv, device="cuda"))


# the stream command's old unclear cases and the streaming API -------------------------------------------------------


def _stream(env: Env, tmp: Path, *extra: object) -> Callable[[], Outcome]:
    return stream("--random", "tiny", "--reference", env.reference, "--garment", env.garment, "--width", 64,
                  "--height", 64, "--frames", 9, "--out", tmp / "frames", *extra)


@case("stream: --switch -12:x.png (argparse's 'expected one argument')", "--switch", "-12:x.png", ">= 1")
def _switch_negative(env, tmp):
    return _stream(env, tmp, "--switch", "-12:x.png")


@case("stream: --prompt-switch -3:p.safetensors", "--prompt-switch", "-3:p.safetensors", ">= 1")
def _prompt_switch_negative(env, tmp):
    return _stream(env, tmp, "--prompt-switch", "-3:p.safetensors")


@case("stream: --frames 10000000 (accepted past the limit)", "--frames 10000000", "10000005", "or fewer")
def _frames_limit(env, tmp):
    return stream("--random", "tiny", "--reference", env.reference, "--garment", env.garment, "--width", 64,
                  "--height", 64, "--frames", 10_000_000, "--out", tmp / "frames")


@case("stream: --vae a training .pt (suggested which=)", "train.pt", "Wan VAE itself")
def _stream_vae_pt(env, tmp):
    from chameleon_core.text import save_prompt_embeddings

    embeds = save_prompt_embeddings(tmp / "prompt.safetensors", torch.randn(4, 64), "a prompt")
    out = stream("--student", env.student, "--vae", env.train_pt, "--prompt-embeds", embeds, "--reference",
                 env.reference, "--garment", env.garment, "--width", 64, "--height", 64, "--frames", 9, "--out",
                 tmp / "frames")()
    return out if "which=" not in out.message else Outcome(2, out.message + " (suggests which=)")


@case("stream: --json a folder (failed after the stream)", "--json", "is a folder", "timing.json")
def _stream_json(env, tmp):
    (tmp / "t").mkdir()
    return _stream(env, tmp, "--json", tmp / "t")


@case("stream: --decoder of the other latent family", "--decoder", "taew2_1", "16-channel")
def _stream_decoder_family(env, tmp):
    from chameleon_core.taehv import TAEHVConfig, random_taehv

    model = random_taehv(TAEHVConfig(latent_channels=16, patch_size=1, widths=(16, 8, 8, 4)), seed=1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "taew2_1.safetensors"))
    return _stream(env, tmp, "--decoder", tmp / "taew2_1.safetensors")


def _state():
    from chameleon_core.config import StreamSettings, preset
    from chameleon_core.random_models import random_transformer

    model = random_transformer(preset("tiny"), seed=0)
    lat = torch.randn(1, 48, 1, 2, 2)
    return model, lat, StreamSettings(chunk_frames=1, cache_frames=5, steps=1)


@case("streaming API: generate(state, 1.5)", "latent_frames", "1.5", "whole number", error=ValueError)
def _generate_float(env, tmp):
    from chameleon_core.streaming import generate, start_stream

    model, lat, settings = _state()
    state = start_stream(model, context=torch.randn(1, 4, 64), reference=lat, garment=lat, settings=settings)
    return library(lambda: generate(state, 1.5))


SEEDS = {"2**64": 2**64, "-1": -1, "1.5": 1.5}
for _name, _seed in SEEDS.items():
    def _seed_case(env, tmp, seed=_seed):
        from chameleon_core.streaming import start_stream

        model, lat, settings = _state()
        return library(lambda: start_stream(model, context=torch.randn(1, 4, 64), reference=lat, garment=lat,
                                            seed=seed, settings=settings))

    case(f"streaming API: start_stream(seed={_name})", "seed", str(_seed), "2**64 - 1", error=ValueError)(_seed_case)


@case("checkpoints: load_vae on a training .pt (suggested which=)", "train.pt", "Wan VAE itself",
      error=CheckpointError)
def _load_vae_pt(env, tmp):
    from chameleon_core.checkpoints import load_vae

    out = library(lambda: load_vae(env.train_pt))
    return out if "which=" not in out.message else Outcome(None, out.message + " (suggests which=)", RuntimeError())


# the aesthetic MLP (training's reward) and the labels of the world ---------------------------------------------------


def _mlp_case(fault: Callable[[Path], Path], name: str = "aesthetic.safetensors"):
    def run(env, tmp):
        from chameleon_core.training.reward import load_aesthetic_mlp

        path = tmp / name
        if fault not in (fifo, _folder):
            if name.endswith(".pth"):
                torch.save(_aesthetic_state(768), path)
            else:
                save_file(_aesthetic_state(768), str(path))
        fault(path)
        return library(lambda: load_aesthetic_mlp(path))

    return run


MLP_FAULTS = {
    "truncated": (truncate, "aesthetic.safetensors", ("aesthetic.safetensors", "truncated")),
    "empty": (empty, "aesthetic.safetensors", ("aesthetic.safetensors", "re-download")),
    "text .pth": (text, "aesthetic.pth", ("aesthetic.pth", "not a PyTorch checkpoint")),
    "FIFO": (fifo, "aesthetic.safetensors", ("aesthetic.safetensors", "not a regular file")),
    "folder": (_folder, "aesthetic.pth", ("aesthetic.pth", "folder")),
    "NaN": (with_nan, "aesthetic.safetensors", ("aesthetic.safetensors", "NaN")),
    "missing": (lambda p: p.unlink() or p, "aesthetic.safetensors", ("aesthetic.safetensors", "not found",
                                                                       "sac+logos+ava1-l14-linearMSE.pth")),
    "wrong keys": (_wrong_layout, "aesthetic.safetensors", ("aesthetic.safetensors", "not a LAION aesthetic MLP")),
}
for _name, (_fault, _file, _expect) in MLP_FAULTS.items():
    case(f"aesthetic MLP load_aesthetic_mlp: {_name}", *_expect, error=CheckpointError)(_mlp_case(_fault, _file))


@case("aesthetic MLP load_aesthetic_mlp: a pickle holding code", "evil.pth", "refusing", error=CheckpointError)
def _mlp_pickle(env, tmp):
    from chameleon_core.training.reward import load_aesthetic_mlp

    return library(lambda: load_aesthetic_mlp(evil_pickle(tmp / "evil.pth", tmp / MARKER)))


def _clip_api(env: Env, tmp: Path, damage: Callable[[Path], object]) -> Outcome:
    from chameleon_core.eval.feature_models import load_clip

    folder = env.copy(_with_clip(env), tmp, "clip")
    damage(folder)
    return library(lambda: load_clip(folder))


CLIP_FAULTS = {
    "config a FIFO": (lambda f: fifo(f / "config.json"), ("config.json", "not a regular file")),
    "weights a FIFO": (lambda f: fifo(f / "model.safetensors"), ("model.safetensors", "not a regular file")),
    "weights truncated": (lambda f: truncate(f / "model.safetensors"), ("clip", "cannot load")),
    "NaN weights": (lambda f: with_nan(f / "model.safetensors"), ("clip", "NaN")),
    "weights a pickle holding code": (lambda f: ((f / "model.safetensors").unlink(),
                                                 evil_pickle(f / "pytorch_model.bin", f.parent / MARKER)),
                                      ("clip", "--clip")),
}
for _name, (_damage, _expect) in CLIP_FAULTS.items():
    case(f"CLIP folder load_clip: {_name}", *_expect, error=CheckpointError)(
        lambda env, tmp, damage=_damage: _clip_api(env, tmp, damage))


def _labels(env: Env, tmp: Path, write: Callable[[Path], object]) -> Outcome:
    from chameleon_core.world.dataset import load_labels

    video = tmp / "v.mp4"
    write(tmp / "v_labels.npz")
    return library(lambda: load_labels(video))


LABEL_FAULTS = {
    "object .npz": (lambda p: np.savez(p, labels=np.array([{"a": 1}], dtype=object)), ("v_labels.npz", "objects")),
    "truncated": (lambda p: (np.savez(p, labels=np.zeros((2, 4, 4), np.uint8)), truncate(p)), ("v_labels.npz",)),
    "text": (text, ("v_labels.npz", "write the dataset again")),
    "FIFO": (fifo, ("v_labels.npz", "not a regular file")),
    "missing": (lambda p: None, ("v_labels.npz", "does not exist")),
    "no labels array": (lambda p: np.savez(p, other=np.zeros(3)), ("v_labels.npz", "labels")),
    "wrong dtype": (lambda p: np.savez(p, labels=np.zeros((2, 4, 4), np.float32)), ("v_labels.npz", "uint8")),
}
for _name, (_write, _expect) in LABEL_FAULTS.items():
    case(f"world labels load_labels: {_name}", *_expect, error=CheckpointError)(
        lambda env, tmp, write=_write: _labels(env, tmp, write))


# --- the test -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_every_bad_input_is_one_clear_refusal(env, tmp_path, name):
    if SKIP_NO_FIFO and "FIFO" in name:
        pytest.skip("needs os.mkfifo (POSIX)")
    c = CASES[name]
    out = run_case(c, env, tmp_path)
    got = verdict(c, out, tmp_path / MARKER)
    if os.environ.get(REPORT):
        with open(os.environ[REPORT], "a") as f:
            f.write(json.dumps({"case": name, "verdict": got, "code": out.code, "message": out.message}) + "\n")
    assert got == "clear", f"{name}: {got}\n  code {out.code}, message:\n{out.message[-3000:]}\n  expected: {c.expect}"


def test_a_bad_row_is_skipped_with_skip_bad_and_the_good_ones_cached(env, tmp_path):
    """The check of every row before any work does not refuse what --skip-bad allows: one bad row, one cached item."""
    c = _clips(env, tmp_path)
    (c.parent / "clip0_src.png").unlink()
    out = _prepare(env, tmp_path, c, skip_bad=True)()
    assert out.code == 0, out.message
    assert len(json.loads((tmp_path / "cache" / "manifest.json").read_text())["items"]) == 1


def test_the_checks_pass_a_sound_run(env, tmp_path):
    """A sound config, cache and weights pass every check (the refusals above are not a check that refuses all)."""
    from chameleon_core.training import preflight
    from chameleon_core.training.config import load_config

    for stage, extra in (("sft", [f"model.init={env.student}"]), ("forcing", []), ("dmd", [])):
        cfg = load_config(f"tiny_{stage}", [f"data.cache={env.cache}", f"run.out={tmp_path / stage}", *extra])
        preflight.check_stage(cfg)
    assert not any(tmp_path.iterdir())  # the checks write nothing


@pytest.mark.slow
def test_the_entry_points_apply_the_policy_as_processes(tmp_path):
    """``python -m chameleon_core.training`` and ``python -m chameleon_core.eval`` as real processes: one message,
    exit code 2, no traceback (the in-process cases above call the same ``main``)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    for argv, expect in (
        (["chameleon_core.training", "sft", "--config", "tiny_sft", "--set", "run.steps=-5", "--set",
          f"run.out={tmp_path / 'run'}"], "run.steps"),
        (["chameleon_core.eval", "world", "--data", str(tmp_path / "nope"), "--videos", str(tmp_path), "--out",
          str(tmp_path / "s.json")], "--data"),
    ):
        p = subprocess.run([sys.executable, "-m", *argv], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, p.stderr
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "error:" in lines[0] and expect in lines[0], p.stderr
        assert not (tmp_path / "run").exists()
