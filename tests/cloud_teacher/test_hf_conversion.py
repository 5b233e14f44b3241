"""Preparing a catalog model for vLLM: which dtype, whether a converted folder is complete, which dtype it runs in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_teacher.backends.vllm import checkpoint_dtype
from cloud_teacher.hf_conversion import FORMAT, MARKER, cpu_has_bf16, hf_dir, is_converted, vllm_dtype
from shared.catalog import CATALOG, DEFAULT_TEACHER, prepare_gguf, wheels_dir
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


CONVERTER = """
import json, logging, os
logging.basicConfig(level=logging.INFO, format="%(message)s")
from cloud_teacher.hf_conversion import MARKER, prepare_for_vllm
from shared.catalog import CATALOG
target = prepare_for_vllm(CATALOG["smollm2-135m"], install=False)
marker = json.loads((target / MARKER).read_text())
print(json.dumps({"path": str(target), "inode": os.stat(target).st_ino, "check": marker["check"]}), flush=True)
"""


@pytest.mark.needs_models
def test_two_teachers_converting_on_one_volume_leave_one_folder_that_neither_deletes(tmp_path: Path) -> None:
    """Two processes start on one fresh cache at once: one converts, the other waits and takes its folder. Before,
    both converted and the later one deleted the folder the first had already renamed into place (and was loading)."""
    env = {
        **os.environ,
        "GKT_CACHE_DIR": str(tmp_path),
        "GKT_MODEL_WHEELS": str(wheels_dir()),  # the wheels `make models` fetched; each process joins the GGUF
        "OMP_NUM_THREADS": "1",
    }
    children = [
        subprocess.Popen([sys.executable, "-c", CONVERTER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=540) for child in children]
    for child, (_, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr.decode()[-3000:]
    results = [json.loads(stdout) for stdout, _ in outputs]
    logs = "".join(stderr.decode() for _, stderr in outputs)
    assert logs.count("converting smollm2-135m into") == 1, logs
    folder = Path(results[0]["path"])
    assert results[0]["path"] == results[1]["path"]
    assert results[0]["inode"] == results[1]["inode"] == folder.stat().st_ino  # both got the folder that stayed
    assert is_converted(folder)
    assert sorted(p.name for p in folder.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name) == []
