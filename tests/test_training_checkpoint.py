"""Training runtime, in one process (CPU, tiny model, a synthetic latent cache): asynchronous checkpoints, what
resuming trusts and never deletes, DCP files that would run code, NaN weights at export, damaged cache items, prompt
lengths, caption cutting as Wan's tokenizer cuts, and the fault guard's exit codes.

The multi-process faults are in tests/test_training_faults.py.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

C = 48  # Wan2.2 latent channels (the tiny preset)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_cache(root: Path, items: int = 4, tokens: int = 5) -> Path:
    """A latent cache in ``prepare``'s format: 32x32 clips of 2 latent frames, prompts of ``tokens`` features."""
    g = torch.Generator().manual_seed(7)
    (root / "items").mkdir(parents=True)
    entries = []
    for i in range(items):
        tensors = {"video": torch.randn(C, 2, 2, 2, generator=g), "reference": torch.randn(C, 1, 2, 2, generator=g),
                   "garment": torch.randn(C, 1, 2, 2, generator=g), "text_dynamic": torch.randn(3, 64, generator=g),
                   "text_full": torch.randn(tokens, 64, generator=g), "text_empty": torch.randn(1, 64, generator=g)}
        save_file(tensors, str(root / "items" / f"v{i}.safetensors"))
        entries.append({"key": f"v{i}", "file": f"items/v{i}.safetensors", "width": 32, "height": 32, "frames": 5,
                        "latent_shape": [C, 2, 2, 2]})
    (root / "manifest.json").write_text(json.dumps({"items": entries, "vae": "random:wan2.2-tiny"}))
    return root


@pytest.fixture
def cache(tmp_path) -> Path:
    return write_cache(tmp_path / "cache")


def sft(cache: Path, out: Path, *sets: str) -> int:
    from chameleon_core.training.config import load_config
    from chameleon_core.training.stage_sft import run_sft

    return run_sft(load_config("tiny_sft", [f"data.cache={cache}", f"run.out={out}", *sets]))


def records(run: Path) -> list[dict]:
    from chameleon_core.training.metrics import read_metrics

    return read_metrics(run / "metrics.jsonl")


# -------------------------------------------------------------------------------------------------------------------
# Asynchronous checkpoints
# -------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_saves_run_in_the_background_one_at_a_time(cache, tmp_path, monkeypatch):
    """A writer that takes 1.5 s per checkpoint: the saving step waits only for the staging copy, the next steps run
    while it writes, the next save waits for it (never two in flight), and the timings land in metrics.jsonl."""
    from torch.distributed.checkpoint import FileSystemWriter

    real, lock, state = FileSystemWriter.write_data, threading.Lock(), {"now": 0, "max": 0}

    def slow_write(self, plan, planner):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(1.5)
        with lock:
            state["now"] -= 1
        return real(self, plan, planner)

    monkeypatch.setattr(FileSystemWriter, "write_data", slow_write)
    run = tmp_path / "run"
    assert sft(cache, run, "run.steps=8", "run.save_every=2") == 8
    assert state["max"] == 1
    recs = {r["step"]: r for r in records(run)}
    assert set(recs) == set(range(1, 9))
    for s in (2, 4, 6, 8):
        assert recs[s]["save_blocking_seconds"] < 1.0, recs[s]  # the step did not wait for the write
    assert "saved_step" not in recs[2] and "saved_step" not in recs[3]  # steps 3, 4 ran during the write
    done = [r for r in recs.values() if r.get("saved_step") == 2]
    assert len(done) == 1 and done[0]["save_seconds"] >= 1.5
    for s in (4, 6, 8):  # the previous save is over by the next one (it waits when it must): reported by then
        assert s - 2 in (recs[s - 1].get("saved_step"), recs[s].get("saved_step")), (recs[s - 1], recs[s])
    ckpts = run / "checkpoints"
    assert (ckpts / "latest").read_text() == "step_0000008"  # the last save finished before the stage returned
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_0000006", "step_0000008"]  # keep=2


@pytest.mark.slow
def test_a_one_process_run_saves_and_resumes_without_collectives(cache, tmp_path, monkeypatch):
    """One process needs no collective to checkpoint, and DCP's gloo collectives slowed the rest of a one-process CPU
    run 1.55x (measured; chameleon_core.training.checkpoint._dcp_group): with the process group up, a save and a
    resume call none, and the resumed run ends where the uninterrupted one does."""
    import torch.distributed as dist
    from safetensors.torch import load_file

    calls = []
    for name in ("all_reduce", "all_gather", "all_gather_object", "gather_object", "broadcast", "broadcast_object_list",
                 "scatter_object_list", "barrier", "reduce_scatter"):
        real = getattr(dist, name)

        def counted(*args, _name=name, _real=real, **kwargs):
            if dist.is_initialized():
                calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(dist, name, counted)
    from chameleon_core.training.checkpoint import Checkpointer

    group_up, save = [], Checkpointer.save

    def save_noting_the_group(self, *args, **kwargs):
        group_up.append(dist.is_initialized())
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", save_noting_the_group)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert sft(cache, whole, "run.steps=6", "run.save_every=100") == 6
    sft(cache, stopped, "run.steps=6", "run.save_every=2", "run.stop_after=4")
    assert sft(cache, stopped, "run.steps=6", "run.save_every=2") == 6
    assert calls == [], calls
    assert group_up == [True] * 4  # whole: step 6; stopped: 2, 4, then 6: the one-process group was up at each
    assert (stopped / "checkpoints" / "latest").read_text() == "step_0000006"
    a, b = (load_file(str(r / "export" / "teacher.safetensors")) for r in (whole, stopped))
    assert all(torch.equal(a[k], b[k]) for k in a)


# -------------------------------------------------------------------------------------------------------------------
# Resuming: which checkpoint, and never deleting what this run did not write
# -------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def saved_run(cache, tmp_path) -> Path:
    """A run stopped after 4 of 10 steps, with checkpoints at steps 2 and 4."""
    run = tmp_path / "run"
    sft(cache, run, "run.steps=10", "run.save_every=2", "run.stop_after=4")
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_0000002", "step_0000004"]
    return run


def _folders(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("step_*"))


@pytest.mark.parametrize("pointer,message", [
    ("step_0000009", r"names step_0000009, but .*step_0000009/trainer.pt.* missing"),
    ("../../etc/passwd", r"not a checkpoint folder name"),
    ("", r"not a checkpoint folder name"),
])
def test_a_broken_latest_pointer_is_an_error_not_a_fresh_start(saved_run, cache, pointer, message):
    from chameleon_core.training.checkpoint import ResumeError

    (saved_run / "checkpoints" / "latest").write_text(pointer)
    with pytest.raises(ResumeError, match=message) as e:
        sft(cache, saved_run, "run.steps=10", "run.save_every=2")
    assert "step_0000002, step_0000004" in str(e.value) and "run.resume=false" in str(e.value)
    assert _folders(saved_run) == ["step_0000002", "step_0000004"]  # nothing deleted, nothing written


def test_an_incomplete_checkpoint_is_an_error(saved_run, cache):
    from chameleon_core.training.checkpoint import ResumeError

    (saved_run / "checkpoints" / "step_0000004" / "dcp" / ".metadata").unlink()
    with pytest.raises(ResumeError, match=r"step_0000004/dcp/.metadata is missing"):
        sft(cache, saved_run, "run.steps=10")


@pytest.mark.slow
def test_resume_says_where_and_deletes_only_its_own_checkpoints(saved_run, cache, caplog):
    with caplog.at_level(logging.INFO, logger="chameleon_core.training"):
        sft(cache, saved_run, "run.steps=10", "run.save_every=2")
    assert f"resuming from {saved_run / 'checkpoints' / 'step_0000004'}" in caplog.text
    assert "checkpoints written before this run stay in" in caplog.text and "step_0000002, step_0000004" in caplog.text
    # Steps 6, 8, 10 were written by this run, which keeps its newest two; the earlier run's 2 and 4 stay.
    assert _folders(saved_run) == ["step_0000002", "step_0000004", "step_0000008", "step_0000010"]
    assert (saved_run / "checkpoints" / "latest").read_text() == "step_0000010"


@pytest.mark.slow
def test_a_fresh_start_never_overwrites_an_earlier_runs_checkpoints(saved_run, cache, caplog):
    before = (saved_run / "checkpoints" / "step_0000002" / "trainer.pt").read_bytes()
    with caplog.at_level(logging.INFO, logger="chameleon_core.training"):
        sft(cache, saved_run, "run.steps=2", "run.save_every=2", "run.resume=false")
    assert "run.resume=false: starting at step 0" in caplog.text
    assert _folders(saved_run) == ["step_0000002", "step_0000002.1", "step_0000004"]
    assert (saved_run / "checkpoints" / "step_0000002" / "trainer.pt").read_bytes() == before
    assert (saved_run / "checkpoints" / "latest").read_text() == "step_0000002.1"


def test_no_checkpoint_says_why(cache, tmp_path, caplog):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_0000003" / "dcp").mkdir(parents=True)  # an interrupted first save
    with caplog.at_level(logging.INFO, logger="chameleon_core.training"):
        sft(cache, run, "run.steps=1")
    assert "no latest pointer" in caplog.text and "step_0000003" in caplog.text
    assert (run / "checkpoints" / "step_0000003").is_dir()


# -------------------------------------------------------------------------------------------------------------------
# DCP files that would run code
# -------------------------------------------------------------------------------------------------------------------


class _Plant:
    """Unpickles into a call of ``exec``: writes a marker file (what a planted checkpoint file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_planted_metadata_is_refused_and_runs_nothing(saved_run, cache, tmp_path):
    from chameleon_core.training.checkpoint import UnsafeCheckpointError

    marker = tmp_path / "ran.txt"
    planted = pickle.dumps(_Plant(marker))
    pickle.loads(planted)  # the plant is real: DCP's own reader (pickle.load) would run it
    assert marker.read_text() == "ran"
    marker.unlink()
    (saved_run / "checkpoints" / "step_0000004" / "dcp" / ".metadata").write_bytes(planted)
    with pytest.raises(UnsafeCheckpointError, match=r"refers to builtins.exec.*not read"):
        sft(cache, saved_run, "run.steps=10")
    assert not marker.exists()


@pytest.mark.slow
def test_planted_checkpoint_entry_is_refused_and_runs_nothing(saved_run, cache, tmp_path):
    """A non-tensor entry (DCP reads them with torch.load(weights_only=False)) replaced by a planted object."""
    import io

    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    from chameleon_core.training.checkpoint import SafeMetadataUnpickler, UnsafeCheckpointError

    dcp_dir = saved_run / "checkpoints" / "step_0000004" / "dcp"
    with (dcp_dir / ".metadata").open("rb") as f:
        meta = SafeMetadataUnpickler(f, "test").load()
    fqn = next(k for k, v in meta.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata))
    marker = tmp_path / "ran.txt"
    buf = io.BytesIO()
    torch.save(_Plant(marker), buf)
    (dcp_dir / "planted.distcp").write_bytes(buf.getvalue())
    index = next(i for i in meta.storage_data if i.fqn == fqn)
    meta.storage_data[index] = _StorageInfo("planted.distcp", 0, len(buf.getvalue()))
    (dcp_dir / ".metadata").write_bytes(pickle.dumps(meta))
    with pytest.raises(UnsafeCheckpointError, match=f"entry '{fqn}'.*not read"):
        sft(cache, saved_run, "run.steps=10")
    assert not marker.exists()


def test_our_metadata_reads_back_through_the_allow_list(saved_run):
    from torch.distributed.checkpoint.metadata import Metadata

    from chameleon_core.training.checkpoint import SafeFileSystemReader

    meta = SafeFileSystemReader(str(saved_run / "checkpoints" / "step_0000004" / "dcp")).read_metadata()
    assert isinstance(meta, Metadata) and any(k.startswith("model.model.") for k in meta.state_dict_metadata)


# -------------------------------------------------------------------------------------------------------------------
# Non-finite numbers
# -------------------------------------------------------------------------------------------------------------------


def test_nan_weights_are_refused_at_export(cache, tmp_path):
    from chameleon_core.training.config import load_config
    from chameleon_core.training.parallel import NonFiniteWeightsError
    from chameleon_core.training.runtime import Run

    run = Run.start(load_config("tiny_sft", [f"data.cache={cache}", f"run.out={tmp_path / 'run'}"]))
    try:
        model = run.build_model("random:0")
        with torch.no_grad():
            next(model.parameters()).to_local().view(-1)[0] = float("nan")
        with pytest.raises(NonFiniteWeightsError, match=r"NaN or inf in 1 of \d+ tensors.*nothing was written"):
            run.export(model, kind="teacher")
    finally:
        run.close()
    assert not (tmp_path / "run" / "export" / "teacher.safetensors").exists()


def test_nan_loss_stops_naming_the_step_and_items(cache, tmp_path, monkeypatch):
    from chameleon_core.training import stage_sft
    from chameleon_core.training.runtime import NonFiniteLossError

    real = stage_sft.sft_loss

    def loss(model, batch, step, cfg, dtype):
        value, extra = real(model, batch, step, cfg, dtype)
        return (value * float("inf") if step == 2 else value), extra

    monkeypatch.setattr(stage_sft, "sft_loss", loss)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"the loss is inf at step 3 on the batch items \['v\d', 'v\d'\]") as e:
        sft(cache, run, "run.steps=6", "run.save_every=2")
    assert "(sft stopped at step 3 of 6)" in e.value.__notes__
    failure = records(run)[-1]
    assert failure["failed"] and failure["nonfinite"] == "loss" and len(failure["items"]) == 2
    assert (run / "checkpoints" / "latest").read_text() == "step_0000002"


# -------------------------------------------------------------------------------------------------------------------
# The latent cache: damaged items, prompt lengths
# -------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage,message", [
    ("truncate", r"cannot be read"),
    ("nan", r"holds NaN or inf in \['reference'\]"),
    ("missing", r"lacks the tensor\(s\) \['text_full'\]"),
    ("shape", r"holds video latents of shape \(48, 1, 2, 2\), but the manifest says \(48, 2, 2, 2\)"),
])
def test_damaged_cache_items_are_named(cache, damage, message):
    from safetensors.torch import load_file

    from chameleon_core.training.data import DataError
    from chameleon_core.training.latent_cache import LatentCache

    item = cache / "items" / "v2.safetensors"
    tensors = load_file(str(item))
    if damage == "truncate":
        item.write_bytes(item.read_bytes()[:64])
    elif damage == "nan":
        tensors["reference"][0, 0, 0, 0] = float("nan")
    elif damage == "missing":
        del tensors["text_full"]
    else:
        tensors["video"] = tensors["video"][:, :1].contiguous()
    if damage != "truncate":
        save_file(tensors, str(item))
    c = LatentCache(cache)
    c.load(1)  # the others read
    with pytest.raises(DataError, match=message) as e:
        c.load(2)
    assert str(item) in str(e.value) and "rerun prepare" in str(e.value)


def test_prompts_longer_than_the_model_are_refused_before_training(tmp_path):
    from chameleon_core.training.data import DataError
    from chameleon_core.training.latent_cache import LatentCache

    root = write_cache(tmp_path / "cache", tokens=20)  # a cache written without the prompt lengths (older prepare)
    c = LatentCache(root)
    assert c.text_tokens(0) == {"dynamic": 3, "full": 20, "empty": 1}  # read from the file's header
    c.check_text_len(20)
    with pytest.raises(DataError, match=r"4 of 4 items \(longest: v3 20 tokens.*--text-len 16.*model.text_len >= 20"):
        c.check_text_len(16)


def test_damaged_manifest_is_named(cache):
    from chameleon_core.training.data import DataError
    from chameleon_core.training.latent_cache import LatentCache

    (cache / "manifest.json").write_text('{"items": [{"key": 1}]}')
    with pytest.raises(DataError, match=r"manifest .*manifest.json is damaged.*rerun prepare"):
        LatentCache(cache)


# -------------------------------------------------------------------------------------------------------------------
# Long captions: cut as Wan's tokenizer cuts them
# -------------------------------------------------------------------------------------------------------------------


def test_random_stand_in_cuts_like_the_tokenizer():
    from chameleon_core.training.prepare import random_text_encoder

    enc = random_text_encoder(8, max_length=5)
    full = random_text_encoder(8, max_length=512)
    long = "one two three four five six seven"
    (cut,) = enc([long])
    (whole,) = full([long])
    assert enc.count(long) == 8 and cut.shape == (1, 5, 8)
    # The first 4 words, then the end token (which is the last row of the uncut encoding too).
    torch.testing.assert_close(cut[0, :4], whole[0, :4], rtol=0, atol=0)
    torch.testing.assert_close(cut[0, 4], whole[0, -1], rtol=0, atol=0)


@pytest.fixture(scope="module")
def tiny_umt5(tmp_path_factory):
    """A tiny random UMT5 encoder and a word-level tokenizer that appends </s> as umT5's does."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("umt5")
    words = "a woman man in red blue dress walks turns on the street slowly".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                         unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.UMT5Config(vocab_size=32, d_model=16, d_kv=4, num_heads=4, d_ff=32, num_layers=2,
                                     relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                     feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0,
                                     eos_token_id=1, decoder_start_token_id=0)
    transformers.UMT5EncoderModel(config).eval().save_pretrained(folder)
    return folder


def test_umt5_captions_are_cut_as_wans_tokenizer_cuts(tiny_umt5):
    """prepare's encoder at --text-len 6 equals the encoder run on the tokenizer's own truncation (first 5 tokens +
    </s>), computed here without chameleon_core."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    from chameleon_core.training.prepare import make_text_encoder

    prompt = "a woman in a red dress walks slowly on the street"
    enc = make_text_encoder(str(tiny_umt5), torch.device("cpu"), max_length=6)
    (features,) = enc([prompt])
    ids = AutoTokenizer.from_pretrained(str(tiny_umt5))(prompt, truncation=True, max_length=6,
                                                        return_tensors="pt")["input_ids"]
    assert ids.shape == (1, 6) and int(ids[0, -1]) == 1  # Wan's truncation ends with </s>
    model = UMT5EncoderModel.from_pretrained(str(tiny_umt5), dtype=torch.bfloat16).eval()  # umT5 runs in bf16
    with torch.no_grad():
        direct = model(input_ids=ids).last_hidden_state.float()
        uncut = model(input_ids=AutoTokenizer.from_pretrained(str(tiny_umt5))(prompt, return_tensors="pt")[
            "input_ids"]).last_hidden_state.float()
    assert features.shape == (1, 6, 16) and enc.count(prompt) == 12  # 11 words + </s>
    torch.testing.assert_close(features, direct, rtol=0, atol=2e-2)
    assert (features[0, :5] - uncut[0, :5]).abs().max() > 0.1  # cutting changes the features (not a slice)
    assert enc.count("a woman walks") == 4


# -------------------------------------------------------------------------------------------------------------------
# The fault guard
# -------------------------------------------------------------------------------------------------------------------


def test_exit_codes_and_lost_peer_messages():
    from chameleon_core.training.data import DataError
    from chameleon_core.training.faults import exit_code, is_lost_peer

    full = OSError(28, "No space left on device")
    assert [exit_code(e) for e in (DataError("x"), FileNotFoundError("x"), full, RuntimeError("x"),
                                   KeyboardInterrupt())] == [2, 2, 2, 1, 130]
    gloo = RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:216")
    assert is_lost_peer(gloo) and not is_lost_peer(RuntimeError("shape mismatch"))


def test_one_process_failure_propagates_with_a_note():
    from chameleon_core.training.faults import FailFast

    seen = []
    with pytest.raises(ValueError, match="bad value") as e:
        with FailFast(0, 1, "sft", where=lambda: "step 3 of 6", on_failure=lambda err, where: seen.append(where)):
            raise ValueError("bad value")
    assert e.value.__notes__ == ["(sft stopped at step 3 of 6)"] and seen == ["step 3 of 6"]


# -------------------------------------------------------------------------------------------------------------------
# GR-DMD's frozen teacher in host memory
# -------------------------------------------------------------------------------------------------------------------


def test_offloaded_teacher_computes_the_same_and_the_stage_runs(tmp_path):
    from torch.distributed.fsdp import CPUOffloadPolicy

    from chameleon_core.training.config import load_config
    from chameleon_core.training.runtime import Run
    from chameleon_core.training.stage_dmd import DMDTrainer

    def policy(model):
        return model._get_fsdp_state()._fsdp_param_group.offload_policy

    cache = write_cache(tmp_path / "cache")
    cfg = load_config("tiny_dmd", [f"data.cache={cache}", f"run.out={tmp_path / 'run'}", "run.steps=1",
                                   "dmd.chunk_frames=1", 'dmd.extra={"offload_teacher": true}'])
    run = Run.start(cfg)
    try:
        plain = run.build_model("random:1", trainable=False)
        offloaded = run.build_model("random:1", trainable=False, offload=True)
        assert isinstance(policy(offloaded), CPUOffloadPolicy) and not isinstance(policy(plain), CPUOffloadPolicy)
        x, ref, gar = torch.randn(1, C, 2, 2, 2), torch.randn(1, C, 1, 2, 2), torch.randn(1, C, 1, 2, 2)
        args = (x, torch.tensor([500.0]), torch.randn(1, 5, 64))
        with torch.no_grad():
            torch.testing.assert_close(offloaded(*args, reference=ref, garment=gar),
                                       plain(*args, reference=ref, garment=gar), rtol=0, atol=0)
        trainer = DMDTrainer(run)  # dmd.extra.offload_teacher reaches the stage's teacher only
        assert isinstance(policy(trainer.teacher), CPUOffloadPolicy)
        assert not isinstance(policy(trainer.critic), CPUOffloadPolicy)
        assert trainer.train() is not None
    finally:
        run.close()
    assert (tmp_path / "run" / "export" / "student.safetensors").is_file()
