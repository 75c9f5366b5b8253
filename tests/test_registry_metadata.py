"""The Comfy Registry metadata in pyproject.toml and the publish workflow the registry documents."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")

REPO = Path(__file__).resolve().parents[1]


def test_tool_comfy_metadata_is_complete_and_points_at_files_that_exist():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert project["name"] and re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert (REPO / project["license"]["file"]).read_text().startswith("\n                                 Apache License")
    repo = project["urls"]["Repository"]
    assert repo.startswith("https://github.com/")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    icon = comfy["Icon"]
    prefix = repo.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    assert icon.startswith(prefix) and (REPO / icon[len(prefix):]).is_file(), icon
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])


def test_publish_workflow_runs_the_registry_action_on_version_bumps():
    text = (REPO / ".github" / "workflows" / "publish.yml").read_text()
    assert "uses: Comfy-Org/publish-node-action@v1" in text
    assert "personal_access_token: ${{ secrets.REGISTRY_ACCESS_TOKEN }}" in text
    assert re.search(r'paths:\s*\n\s*- "pyproject.toml"', text) and "workflow_dispatch:" in text
