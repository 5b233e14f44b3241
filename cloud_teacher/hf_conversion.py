"""Turns a catalog GGUF into the Hugging Face folder vLLM loads, once, and checks it by a quick generation.

vLLM needs a Hugging Face checkpoint, not GGUF. transformers reads the GGUF, dequantises it, and saves a folder in
bfloat16 where the CPU has native bf16 (else float32). The check: the converted folder, reloaded, must pick the
same first greedy token as llama.cpp on the GGUF itself for a fixed prompt.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from shared.catalog import CatalogModel, marker_records, models_dir, prepare_gguf, write_marker
from shared.hardware import has_cuda

logger = logging.getLogger(__name__)

MARKER = "gkt-prepared.json"
# Bumped when a converted folder's content changes meaning: older folders are converted again.
# 2: generation_config.json lists every end-of-generation token (vLLM stopped only at the GGUF's one EOS).
FORMAT = 2
CHECK_PROMPT = "The capital of France is"
Dtype = Literal["bfloat16", "float32"]


class ConversionCheckError(RuntimeError):
    """The converted model does not generate what the GGUF generates."""


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16); elsewhere bf16 is slow emulation."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def vllm_dtype(model: CatalogModel) -> Dtype:
    """The dtype the converted folder is saved in (vLLM's `dtype="auto"` then runs it in that dtype)."""
    if model.vllm_dtype == "float32":
        return "float32"
    return "bfloat16" if cpu_has_bf16() or has_cuda() else "float32"


def hf_dir(model: CatalogModel, dtype: Dtype | None = None) -> Path:
    """Where the converted folder of `model` lives in the project cache."""
    return models_dir() / f"{model.name}-hf-{dtype or vllm_dtype(model)}"


def _files(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file() and p.name != MARKER}


def is_converted(directory: Path) -> bool:
    """True when `directory` holds a finished, checked conversion whose files are all still there, same sizes."""
    return directory.is_dir() and marker_records(directory / MARKER, {"format": FORMAT, "files": _files(directory)})


def _llama_cpp_first_tokens(gguf: Path, n: int) -> list[int]:
    """Greedy tokens llama.cpp writes after `CHECK_PROMPT` (the reference the conversion must agree with)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=1, verbose=False)
    try:
        tokens = llm.tokenize(CHECK_PROMPT.encode(), add_bos=True)
        out: list[int] = []
        for token in llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0):
            out.append(token)
            if len(out) >= n:
                break
        return out
    finally:
        llm.close()


def _end_tokens_as_llama_cpp_knows_them(gguf: Path) -> list[int]:
    from shared.llama.model import LlamaModel

    vocab = LlamaModel(gguf, vocab_only=True)
    try:
        return vocab.end_of_generation_tokens()
    finally:
        vocab.close()


def write_end_tokens(directory: Path, gguf: Path) -> list[int]:
    """Lists every end-of-generation token of the GGUF in the folder's generation config, the config's own EOS
    first. transformers keeps only the GGUF's one EOS id, but an instruct model also ends with others (Qwen writes
    `<|endoftext|>` after a raw-completion answer): vLLM, which stops at the generation config's ids, would write
    on past the answer where llama.cpp stops."""
    path = directory / "generation_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    declared = config.get("eos_token_id")
    first = [declared] if isinstance(declared, int) else list(declared or [])
    ends = first + [t for t in _end_tokens_as_llama_cpp_knows_them(gguf) if t not in first]
    config["eos_token_id"] = ends
    path.write_text(json.dumps(config, indent=2))
    return ends


def check_conversion(directory: Path, gguf: Path) -> str:
    """Reloads the folder and generates a few greedy tokens; raises `ConversionCheckError` when its first token
    differs from llama.cpp's on the GGUF. Returns the generated text (for the log)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype="auto")
    ids = tokenizer(CHECK_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        generated = model.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1] :].tolist()
    text = str(tokenizer.decode(generated))
    reference = _llama_cpp_first_tokens(gguf, 4)
    # Dequantised weights in bf16 and llama.cpp's quantised kernels may drift a few tokens in; the first greedy
    # token of an easy prompt must agree, or the conversion (weights or tokenizer) is wrong.
    if not generated or not reference or generated[0] != reference[0]:
        raise ConversionCheckError(
            f"{directory}: the converted model continues {CHECK_PROMPT!r} with {text!r} (tokens {generated}), "
            f"llama.cpp on the GGUF with tokens {reference}"
        )
    return text


def convert(model: CatalogModel, gguf: Path, target: Path, dtype: Dtype) -> None:
    """Dequantises the GGUF and saves a Hugging Face folder in `dtype` (transformers does the GGUF reading)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # One name per process: two teachers converting on a shared volume never write into one folder.
    work = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.float32,
            # transformers keeps GGUF weights packed and will not save them unless they are dequantised.
            quantization_config=GgufConfig(dequantize=True),
        )
        loaded.to(getattr(torch, dtype)).save_pretrained(work)
        del loaded
        if model.force_bos:
            tokenizer.add_bos_token = True  # type: ignore[misc]  # a property in the stubs, settable at run time
            tokenizer.save_pretrained(work, add_bos_token=True)
            config = json.loads((work / "tokenizer_config.json").read_text())
            config["add_bos_token"] = True
            (work / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        else:
            tokenizer.save_pretrained(work)
        ends = write_end_tokens(work, gguf)
        sample = check_conversion(work, gguf)
        marker = {
            "format": FORMAT,
            "model": model.name,
            "source_sha256": model.sha256,
            "dtype": dtype,
            "end_tokens": ends,
            "check": sample,
        }
        write_marker(work / MARKER, {**marker, "files": _files(work)})
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # a failed or interrupted conversion leaves nothing behind
        raise
    # Only one process converts at a time (see `_conversion_lock`), so nobody else is writing `target`. A complete
    # folder already there (`--force`, an older format) is moved aside, not deleted, before the new one takes its
    # name: a teacher still loading it keeps its files until the swap is done.
    old = target.with_name(f"{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    work.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _conversion_lock(target: Path) -> Iterator[None]:
    """Serialises conversions of one folder across processes (two teachers starting on one volume): the second
    waits, then finds the first one's finished folder instead of converting again and replacing it while the first
    is loading it. The lock dies with its process, so a killed converter never blocks the next one."""
    lock = target.with_name(f"{target.name}.lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        # Under the lock no one converts: work folders still here were left by converters that died.
        prefix = glob.escape(str(target))
        for stale in glob.glob(f"{prefix}.partial-*") + glob.glob(f"{prefix}.old-*"):
            logger.warning("removing %s, left by an interrupted conversion", stale)
            shutil.rmtree(stale, ignore_errors=True)
        yield


def prepare_for_vllm(model: CatalogModel, *, install: bool = True, force: bool = False) -> Path:
    """The converted, checked folder of `model`, converting only when it is missing or incomplete."""
    dtype = vllm_dtype(model)
    target = hf_dir(model, dtype)
    if not force and is_converted(target):
        return target
    gguf = prepare_gguf(model, install=install)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _conversion_lock(target):
        if not force and is_converted(target):
            return target  # another process converted it while this one waited for the lock
        started = time.monotonic()
        logger.info("converting %s into %s (%s; 1-2 minutes and several GB of RAM, once)", model.name, target, dtype)
        convert(model, gguf, target, dtype)
        logger.info("%s converted and checked in %.0fs", model.name, time.monotonic() - started)
    return target
