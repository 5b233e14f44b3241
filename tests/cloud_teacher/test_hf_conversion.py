"""Preparing a catalog model for vLLM: which dtype, whether a converted folder is complete, which dtype it runs in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_teacher.backends.vllm import checkpoint_dtype
from cloud_teacher.hf_conversion import FORMAT, MARKER, cpu_has_bf16, hf_dir, is_converted, vllm_dtype
from shared.catalog import CATALOG, DEFAULT_TEACHER, prepare_gguf
from shared.hardware import has_cuda
from shared.llama.model import LlamaModel


def test_bf16_only_where_the_cpu_has_it_and_gemma_always_float32() -> None:
    expected = "bfloat16" if cpu_has_bf16() or has_cuda() else "float32"
    assert vllm_dtype(CATALOG[DEFAULT_TEACHER]) == expected
    assert vllm_dtype(CATALOG["gemma3-270m"]) == "float32"
    assert hf_dir(CATALOG[DEFAULT_TEACHER]).name == f"{DEFAULT_TEACHER}-hf-{expected}"


def test_a_folder_counts_as_converted_only_with_its_marker_and_every_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"dtype": "float32"}))
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    assert not is_converted(tmp_path)  # no marker: an interrupted conversion
    files = {"config.json": (tmp_path / "config.json").stat().st_size, "model.safetensors": 10}
    (tmp_path / MARKER).write_text(json.dumps({"files": files}))
    assert not is_converted(tmp_path)  # a folder from before the current format: converted again
    (tmp_path / MARKER).write_text(json.dumps({"format": FORMAT, "files": files}))
    assert is_converted(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x" * 9)  # truncated afterwards
    assert not is_converted(tmp_path)


@pytest.mark.parametrize(
    ("config", "expected"), [({"dtype": "float32"}, "float32"), ({"torch_dtype": "bfloat16"}, "bfloat16"), ({}, "auto")]
)
def test_vllm_runs_a_folder_in_the_dtype_it_was_saved_in(tmp_path: Path, config: dict[str, str], expected: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert checkpoint_dtype(str(tmp_path)) == expected
    assert checkpoint_dtype("Qwen/Qwen2.5-Coder-1.5B-Instruct") == "auto"  # a hub id: vLLM decides


@pytest.mark.needs_models
def test_the_default_teacher_folder_was_converted_and_checked_by_make_models() -> None:
    folder = hf_dir(CATALOG[DEFAULT_TEACHER])
    assert is_converted(folder)
    marker = json.loads((folder / MARKER).read_text())
    assert marker["source_sha256"] == CATALOG[DEFAULT_TEACHER].sha256
    assert "Paris" in marker["check"]  # the quick generation after conversion


@pytest.mark.needs_models
def test_the_converted_teacher_ends_where_llama_cpp_ends() -> None:
    """Qwen ends a raw-completion answer with `<|endoftext|>`, its chat turns with `<|im_end|>`: vLLM must stop at
    both (and every other token llama.cpp treats as an end), not only at the one EOS transformers keeps."""
    folder = hf_dir(CATALOG[DEFAULT_TEACHER])
    ends = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    assert ends[0] == json.loads((folder / "config.json").read_text())["eos_token_id"] == 151645  # <|im_end|>
    assert 151643 in ends  # <|endoftext|>
    model = LlamaModel(prepare_gguf(CATALOG[DEFAULT_TEACHER], install=False), vocab_only=True)
    try:
        assert sorted(ends) == model.end_of_generation_tokens()
    finally:
        model.close()
