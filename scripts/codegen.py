"""Generates the Python gRPC stubs in `shared/protocol/gkt/v1/` from the `.proto` files in `proto/` (`make proto`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = PROJECT_ROOT / "proto"
STUB_ROOT = PROJECT_ROOT / "shared" / "protocol"  # stubs land in shared/protocol/gkt/v1/

# protoc writes imports relative to the proto root (`from gkt.v1 import x_pb2`); the stubs live inside the
# `shared.protocol` package, so the imports are rewritten to stay inside it.
_IMPORT_PATTERN = re.compile(r"^from gkt\.v1 import", re.MULTILINE)


def proto_files() -> list[Path]:
    """The project's `.proto` files, in a stable order."""
    return sorted(PROTO_ROOT.glob("gkt/v1/*.proto"))


def generate(out_dir: Path = STUB_ROOT) -> list[Path]:
    """Writes `*_pb2.py`, `*_pb2.pyi` and `*_pb2_grpc.py` for every proto file under `out_dir`; returns them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(path.relative_to(PROTO_ROOT)) for path in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    package_dir = out_dir / "gkt" / "v1"
    for init in (out_dir / "gkt" / "__init__.py", package_dir / "__init__.py"):
        init.write_text('"""Generated gRPC stubs (do not edit; run `make proto`)."""\n')
    written = sorted(package_dir.glob("*_pb2*.py*"))
    for path in written:
        path.write_text(_IMPORT_PATTERN.sub("from shared.protocol.gkt.v1 import", path.read_text()))
    return written


if __name__ == "__main__":
    for generated in generate():
        sys.stdout.write(f"{generated.relative_to(PROJECT_ROOT)}\n")
