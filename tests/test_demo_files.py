"""The pack's shipped demo files (``demo/``) and ``python -m chameleon_core.tools.demo_models``: the files the demo
templates load exist under their names, the tool copies them elsewhere byte for byte, and ``--random`` writes fresh
loadable ones. That ComfyUI finds them with no command is checked in a real ComfyUI (``tests/
test_comfyui_integration.py``, ``demo_server``)."""

from __future__ import annotations

import torch

from chameleon_core.checkpoints import load_transformer, load_vae
from chameleon_core.text import load_prompt_embeddings
from chameleon_core.tools import demo_models


def test_the_shipped_demo_files_exist_and_load_with_the_core():
    files = demo_models.shipped_files()
    assert sorted(files) == sorted([*demo_models.FILES, *demo_models.IMAGES])
    for path in files.values():
        assert path.is_file() and path.stat().st_size > 0, path
    model = load_transformer(files["student"], dtype=torch.float32)
    vae = load_vae(files["vae"])
    prompt = load_prompt_embeddings(files["prompt"])
    assert prompt.shape[-1] == model.config.text_dim
    assert vae.config.z_dim == model.config.latent.channels


def test_the_tool_copies_the_shipped_files(tmp_path):
    assert demo_models.main(["--models", str(tmp_path / "models"), "--input", str(tmp_path / "input")]) == 0
    for key, src in demo_models.shipped_files().items():
        dst = tmp_path / "models" / demo_models.FILES[key] if key in demo_models.FILES else tmp_path / "input" / key
        assert dst.read_bytes() == src.read_bytes(), key


def test_random_files_are_seeded_and_say_they_are_random(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, 0), (b, 1)):
        assert demo_models.main(["--random", "--seed", str(seed), "--models", str(out / "models"),
                                 "--input", str(out / "input")]) == 0
    student = demo_models.FILES["student"]
    assert (a / "models" / student).read_bytes() != (b / "models" / student).read_bytes()
    assert "random" in demo_models.weights_note(a)
