"""Prompt features: embedding files (save/load and their errors) and umT5 encoding through transformers.

The encoder tests build a tiny random ``UMT5EncoderModel`` and a word-level tokenizer offline in a temporary folder
(nothing is downloaded) and check the reference's text handling: pad to max_length with the mask, then cut each row
to its true token count.
"""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from safetensors.torch import save_file

from chameleon_core import text
from chameleon_core.text import (
    TextEncoderUnavailable,
    encode_prompts,
    load_prompt_embeddings,
    load_prompt_encoder,
    prompt_of,
    save_prompt_embeddings,
)
from chameleon_core.tools import prompt_embeds

WORDS = "a woman man in red blue green dress shirt jacket walks runs turns on the street studio light smiles".split()
SPECIALS = {"<pad>": 0, "</s>": 1, "<unk>": 2}
D_MODEL = 32


# --- embedding files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 16), (1, 7, 16)])
def test_save_load_round_trip(tmp_path, shape):
    features = torch.randn(shape).to(torch.bfloat16)
    path = save_prompt_embeddings(tmp_path / "sub" / "p.safetensors", features, "a woman in a red dress")
    loaded = load_prompt_embeddings(path, text_dim=16)
    assert loaded.shape == (1, 7, 16) and loaded.dtype == torch.bfloat16
    assert torch.equal(loaded, features.reshape(1, 7, 16))
    assert prompt_of(path) == "a woman in a red dress"


def test_load_picks_named_tensor_or_key(tmp_path):
    ctx, other = torch.randn(5, 8), torch.randn(3, 8)
    path = tmp_path / "several.safetensors"
    save_file({"prompt_embeds": ctx, "negative_prompt_embeds": other}, str(path))
    assert torch.equal(load_prompt_embeddings(path)[0], ctx)
    assert torch.equal(load_prompt_embeddings(path, key="negative_prompt_embeds")[0], other)
    single = tmp_path / "single.safetensors"
    save_file({"whatever": other.unsqueeze(0)}, str(single))
    assert torch.equal(load_prompt_embeddings(single)[0], other)


def test_load_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors.*does not exist.*python -m chameleon_core.tools.prompt_embeds"):
        load_prompt_embeddings(missing)
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_prompt_embeddings(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.safetensors.*does not exist"):
        prompt_of(missing)


def test_load_several_tensors_without_key_lists_names(tmp_path):
    path = tmp_path / "ambiguous.safetensors"
    save_file({"pos": torch.randn(4, 8), "neg": torch.randn(4, 8)}, str(path))
    with pytest.raises(ValueError, match=r"2 tensors \['neg', 'pos'\].*key="):
        load_prompt_embeddings(path)
    with pytest.raises(ValueError, match=r"no tensor named 'ctx'.*\['neg', 'pos'\]"):
        load_prompt_embeddings(path, key="ctx")
    empty = tmp_path / "empty.safetensors"
    save_file({}, str(empty))
    with pytest.raises(ValueError, match="holds no tensors"):
        load_prompt_embeddings(empty)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (torch.randn(8), r"must be \[L, D\] or \[1, L, D\].*got shape \(8,\)"),
        (torch.randn(2, 4, 8), r"got shape \(2, 4, 8\)"),
        (torch.randn(1, 1, 4, 8), r"got shape \(1, 1, 4, 8\)"),
        (torch.zeros(0, 8), r"is empty"),
        (torch.ones(1, 12, dtype=torch.int64), r"dtype torch.int64.*token ids"),
    ],
)
def test_load_bad_tensor(tmp_path, tensor, message):
    path = tmp_path / "bad.safetensors"
    save_file({"context": tensor}, str(path))
    with pytest.raises(ValueError, match=message):
        load_prompt_embeddings(path)


def test_load_wrong_dim_and_not_safetensors(tmp_path):
    path = save_prompt_embeddings(tmp_path / "p.safetensors", torch.randn(3, 8), "x")
    with pytest.raises(ValueError, match="8 features per token.*text_dim=4096"):
        load_prompt_embeddings(path, text_dim=4096)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="cannot read .*junk.safetensors as safetensors"):
        load_prompt_embeddings(junk)


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 8\)"):
        save_prompt_embeddings(tmp_path / "p.safetensors", torch.randn(2, 3, 8), "x")
    with pytest.raises(ValueError, match="prompt must be the prompt text"):
        save_prompt_embeddings(tmp_path / "p.safetensors", torch.randn(3, 8), ["x"])  # type: ignore[arg-type]


# --- transformers missing / folder errors (no transformers needed) -------------------------------------------------


def test_missing_transformers_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    hint = r'pip install "transformers>=4.40" sentencepiece protobuf.*\.\[text\]'
    with pytest.raises(TextEncoderUnavailable, match=hint):
        encode_prompts(tmp_path, ["a woman"], device="cpu")
    assert issubclass(TextEncoderUnavailable, ImportError)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="text encoder folder .*absent.* does not exist.*config.json"):
        text.resolve_encoder_dirs(tmp_path / "absent")
    wan_release = tmp_path / "Wan2.2-TI2V-5B"
    wan_release.mkdir()
    (wan_release / text.WAN_NATIVE_T5).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no umT5 encoder in .*expected config.json.*found .*enc-bf16.pth.*"
                       r"Wan's own module names"):
        text.resolve_encoder_dirs(wan_release)
    encoder_only = tmp_path / "enc"
    encoder_only.mkdir()
    (encoder_only / "config.json").write_text("{}")
    (encoder_only / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer files \(tokenizer.json or spiece.model.*--tokenizer"):
        text.resolve_encoder_dirs(encoder_only)


# --- the transformers path, with a tiny random umT5 -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_umt5(tmp_path_factory):
    """A folder with a tiny random UMT5 encoder and a word-level tokenizer that appends </s> like umT5's."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("umt5-tiny")

    vocab = {**SPECIALS, **{w: i + len(SPECIALS) for i, w in enumerate(WORDS)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)

    torch.manual_seed(0)
    config = transformers.UMT5Config(
        vocab_size=64, d_model=D_MODEL, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    transformers.UMT5EncoderModel(config).eval().save_pretrained(folder)
    return folder


def _direct(folder, prompt: str) -> torch.Tensor:
    """Independent computation: the encoder on the unpadded ids, no mask, loaded without chameleon_core."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    ids = AutoTokenizer.from_pretrained(str(folder))(prompt, return_tensors="pt")["input_ids"]  # [1, L] with </s>
    model = UMT5EncoderModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state  # [1, L, D]


def test_encode_cuts_to_true_length_and_matches_unpadded(tiny_umt5):
    short, long = "a woman in a red dress", "a man in a blue jacket walks on the street in studio light"
    out = encode_prompts(tiny_umt5, [short, long], device="cpu", dtype=torch.float32)
    assert [o.shape for o in out] == [(1, 7, D_MODEL), (1, 14, D_MODEL)]  # words + </s>
    assert all(o.dtype == torch.float32 and o.device.type == "cpu" for o in out)
    for prompt, o in zip([short, long], out):
        torch.testing.assert_close(o, _direct(tiny_umt5, prompt), rtol=0, atol=1e-5)


def test_encoder_kept_and_reused(tiny_umt5):
    encoder = load_prompt_encoder(tiny_umt5, device="cpu", dtype=torch.float32)
    assert encoder.dim == D_MODEL and encoder.model.config.model_type == "umt5"
    # The reference cleans whitespace (and HTML entities) before tokenizing.
    messy, clean = encoder(["  a woman \n in a   red dress ", "a woman in a red dress"])
    torch.testing.assert_close(messy, clean, rtol=0, atol=0)
    assert torch.equal(encoder("a woman smiles")[0], encoder(["a woman smiles"])[0])


def test_encode_bf16_and_truncation(tiny_umt5, caplog):
    with caplog.at_level(logging.WARNING, logger="chameleon_core.text"):
        (out,) = encode_prompts(tiny_umt5, ["a woman walks " * 10], device="cpu", dtype=torch.bfloat16, max_length=8)
    assert out.shape == (1, 8, D_MODEL) and out.dtype == torch.bfloat16
    assert "prompt has 31 tokens; kept the first 8" in caplog.text


def test_encode_errors(tiny_umt5, tmp_path):
    with pytest.raises(ValueError, match="non-empty list of strings"):
        encode_prompts(tiny_umt5, [], device="cpu")
    with pytest.raises(ValueError, match="dtype must be one of"):
        encode_prompts(tiny_umt5, ["a"], device="cpu", dtype=torch.int8)


def test_wrong_model_type_and_tokenizer_dependency(tiny_umt5, tmp_path, monkeypatch):
    import transformers

    t5 = tmp_path / "t5"
    t5.mkdir()
    for f in tiny_umt5.iterdir():
        (t5 / f.name).write_bytes(f.read_bytes())
    transformers.T5Config(vocab_size=64, d_model=D_MODEL, num_layers=1, num_heads=4, d_kv=8).save_pretrained(t5)
    with pytest.raises(ValueError, match="describes a 't5' model, but Wan's text encoder is 'umt5'"):
        encode_prompts(t5, ["a"], device="cpu")

    def needs_protobuf(*args, **kwargs):
        raise ImportError("requires the protobuf library")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", needs_protobuf)
    with pytest.raises(TextEncoderUnavailable, match=r"tokenizer in .*umt5-tiny.*protobuf library.*pip install"):
        encode_prompts(tiny_umt5, ["a"], device="cpu")


def test_diffusers_layout_and_cli(tiny_umt5, tmp_path):
    """A diffusers folder (text_encoder/ + tokenizer/) loads; the CLI writes files load_prompt_embeddings reads."""
    pipeline = tmp_path / "Wan2.2-TI2V-5B-Diffusers"
    (pipeline / "text_encoder").mkdir(parents=True)
    (pipeline / "tokenizer").mkdir()
    for f in tiny_umt5.iterdir():
        is_model = f.name in ("config.json", "model.safetensors")
        (pipeline / ("text_encoder" if is_model else "tokenizer") / f.name).write_bytes(f.read_bytes())
    model_dir, tok_dir = text.resolve_encoder_dirs(pipeline)
    assert (model_dir.name, tok_dir.name) == ("text_encoder", "tokenizer")
    assert text.resolve_encoder_dirs(pipeline / "text_encoder")[1] == tok_dir  # the sibling tokenizer/

    outs = [tmp_path / "red.safetensors", tmp_path / "blue.safetensors"]
    prompts = ["a woman in a red dress", "a man turns"]
    argv = ["--encoder", str(pipeline), "--dtype", "fp32", "--device", "cpu"]
    for p, o in zip(prompts, outs):
        argv += ["--prompt", p, "--out", str(o)]
    assert prompt_embeds.main(argv) == 0
    for p, o in zip(prompts, outs):
        loaded = load_prompt_embeddings(o, text_dim=D_MODEL)
        torch.testing.assert_close(loaded, _direct(tiny_umt5, p), rtol=0, atol=1e-5)
        assert prompt_of(o) == p
    assert prompt_embeds.main(["--encoder", str(tmp_path / "none"), "--prompt", "a", "--out", str(outs[0])]) == 2


# --- issue 13: the umT5 folder and embeddings raise the one error type --------------------------------------------


def test_pickled_pytorch_model_bin_is_refused_without_suggesting_weights_only_false(tiny_umt5, tmp_path):
    import pickle

    from chameleon_core.checkpoints import CheckpointError

    folder = tmp_path / "umt5"
    folder.mkdir()
    for f in tiny_umt5.iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"shared.weight": Evil()}, f)
    with pytest.raises(CheckpointError) as info:
        encode_prompts(folder, ["a"], device="cpu")
    message = str(info.value)
    assert str(folder) in message and "pickled Python objects" in message and "model.safetensors" in message
    assert "weights_only=False" not in message


def test_nan_prompt_embeddings_are_refused_naming_the_file(tmp_path):
    from chameleon_core.checkpoints import CheckpointError

    bad = torch.randn(4, 8)
    bad[2, 3] = float("nan")
    path = save_prompt_embeddings(tmp_path / "p.safetensors", bad, "a prompt")
    with pytest.raises(CheckpointError, match=r"p\.safetensors: tensor 'context' holds NaN/inf.*encode the prompt"):
        load_prompt_embeddings(path)
