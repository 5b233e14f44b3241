"""The committed gRPC stubs are exactly what `make proto` generates from the .proto files."""

from pathlib import Path

from scripts import codegen


def test_committed_stubs_match_proto_files(tmp_path: Path) -> None:
    generated = codegen.generate(tmp_path)
    assert generated, "no stubs were generated"
    for path in generated:
        committed = codegen.STUB_ROOT / path.relative_to(tmp_path)
        assert committed.is_file(), f"{committed} is missing: run `make proto`"
        assert committed.read_text() == path.read_text(), f"{committed} drifted from proto/: run `make proto`"
    committed_files = {p.name for p in (codegen.STUB_ROOT / "gkt" / "v1").glob("*_pb2*.py*")}
    assert committed_files == {p.name for p in generated}, "stale stub files without a .proto"


def test_every_proto_field_has_a_comment() -> None:
    for proto in codegen.proto_files():
        lines = proto.read_text().splitlines()
        for number, line in enumerate(lines):
            stripped = line.strip()
            is_field = stripped.endswith(";") and "=" in stripped and not stripped.startswith(("option", "syntax"))
            if is_field:
                assert lines[number - 1].strip().startswith("//"), f"{proto.name}:{number + 1} has no comment"
