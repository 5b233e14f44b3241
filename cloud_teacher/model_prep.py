"""`gkt models prepare`: turns the teacher GGUF into the Hugging Face directory vLLM loads, once, and verifies it."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from shared.models import cache_dir, default_teacher_gguf

logger = logging.getLogger(__name__)

MARKER = "gkt-prepared.json"
PREPARED_NAME = "gemma-3-270m-hf-fp32"


def default_teacher_hf_dir() -> Path:
    return cache_dir() / "models" / PREPARED_NAME


def _checksums(directory: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name != MARKER:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            sums[path.name] = digest.hexdigest()
    return sums


def is_prepared(directory: Path) -> bool:
    """True when `directory` holds a finished conversion whose files still match their recorded checksums."""
    marker = directory / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())["sha256"]
    except (ValueError, KeyError):
        return False
    return recorded == _checksums(directory)


def convert(gguf: Path, target: Path) -> None:
    """Dequantises the GGUF to a float32 Hugging Face checkpoint (transformers does the GGUF reading)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The converted Gemma tokenizer forgets to add <bos>; without it Gemma writes garbage.
    tokenizer.add_bos_token = True
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    model.save_pretrained(work)
    tokenizer.save_pretrained(work, add_bos_token=True)
    config = json.loads((work / "tokenizer_config.json").read_text())
    config["add_bos_token"] = True
    (work / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (work / MARKER).write_text(json.dumps({"source": gguf.name, "sha256": _checksums(work)}, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)


def prepare_teacher(target: Path | None = None, *, force: bool = False) -> Path:
    """The prepared directory, converting only when it is missing or does not verify."""
    target = target or default_teacher_hf_dir()
    if not force and is_prepared(target):
        return target
    started = time.monotonic()
    gguf = default_teacher_gguf()
    logger.info("converting %s into %s (about a minute)", gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    convert(gguf, target)
    if not is_prepared(target):
        raise RuntimeError(f"the converted model in {target} does not verify")
    logger.info("teacher prepared in %.1fs", time.monotonic() - started)
    return target


def prepare_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="gkt models prepare", description=__doc__)
    parser.add_argument("--target", type=Path, default=None, help="output directory (default: the cache folder)")
    parser.add_argument("--force", action="store_true", help="convert again even if a verified copy exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = prepare_teacher(args.target, force=args.force)
    sys.stdout.write(f"teacher model ready: {path}\n")
    return 0
