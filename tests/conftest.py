"""Shared test fixtures: tiny configs, seeded weights, and the released checkpoints' layouts (``tests/data``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = REPO / "tests" / "data" / "checkpoint-layouts"
PACK = "comfyui_fashionchameleon"


def load_pack(name: str = PACK):
    """Import the repository as the package ComfyUI loads (``custom_nodes/<pack>/__init__.py``), under ``name``.

    ``nodes/`` imports the core relatively (``from ..chameleon_core import ...``), so it imports only as part of the
    pack; importing the pack runs no ComfyUI code. Done once here, before test modules are collected, so they can
    ``from comfyui_fashionchameleon.nodes import adapters``.
    """
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


load_pack()


def load_layout(name: str) -> dict:
    """A released checkpoint's layout (``wan2.2-ti2v-5b.transformer``, ``wan2.1-vae``, ...) as a dict: its config,
    tensor names and shapes (``tests/data/checkpoint-layouts``)."""
    return json.loads((LAYOUTS / f"{name}.json").read_text())


SLOW_WORLD_TESTS = (
    "tests/test_world_pipeline.py::test_quick_run_",  # the whole recipe on the synthetic world (one shared run)
    "tests/test_world_pipeline.py::test_export_writes_the_demo_files",
    "tests/test_world_pipeline.py::test_a_codec_that_fails_the_gate_stops_the_run_before_training",
    "tests/test_world_data.py::test_codec_trains_saves_loads_and_is_gated",
)
"""Node-id prefixes of the synthetic world's tests that take more than a few seconds (marked ``slow`` here, where
the other files mark theirs with the decorator)."""


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(SLOW_WORLD_TESTS):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; none is available")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def reference_layout():
    """Fixture form of :func:`load_layout`, for tests (test modules are not importable from each other)."""
    return load_layout


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# --- VAE (tests/test_vae.py) ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["wan2.1-tiny", "wan2.2-tiny"])
def tiny_vae(request):
    """A tiny random-weight Wan VAE of each family (fp32, CPU): real latent channels and strides, widths of 8-16."""
    from chameleon_core.vae import build_vae

    return build_vae(request.param, seed=0)


@pytest.fixture
def tiny_vae_file(tmp_path):
    """Write a tiny Wan2.2 VAE's state dict to ``tmp_path`` as safetensors with an optional prefix."""
    from safetensors.torch import save_file

    from chameleon_core.vae import build_vae

    def write(prefix: str = "", family: str = "wan2.2-tiny", name: str = "vae.safetensors"):
        vae = build_vae(family, seed=1)
        path = tmp_path / name
        save_file({prefix + k: v.contiguous() for k, v in vae.model.state_dict().items()}, str(path))
        return vae, path

    return write
