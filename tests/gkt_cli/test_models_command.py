"""`gkt models list|prepare` on the real catalog (the models `make models` prepared)."""

from __future__ import annotations

import subprocess
import sys

from shared.catalog import CATALOG


def gkt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gkt_cli.main", *args], capture_output=True, text=True, timeout=300)


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
