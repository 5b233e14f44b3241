"""The architecture's one rule about imports: `shared` <- tiers <- app. Nothing points back up."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("cloud_teacher", "edge_student")
APPS = ("gkt_cli", "benchmarks")
# Which top-level packages each package may import from this project.
ALLOWED = {
    "shared": {"shared"},
    "cloud_teacher": {"shared", "cloud_teacher"},
    "edge_student": {"shared", "edge_student"},
    "gkt_cli": {"shared", *TIERS, *APPS},
    "benchmarks": {"shared", *TIERS, *APPS},
}
PROJECT = {"shared", *TIERS, *APPS, "scripts", "tests"}


def project_imports(path: Path) -> set[str]:
    """Top-level project packages a module imports (lazily inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in PROJECT)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(project_imports(path) - ALLOWED[package])
        for path in (ROOT / package).rglob("*.py")
        if project_imports(path) - ALLOWED[package]
    }
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}; found {wrong}"


def test_the_rule_would_catch_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from edge_student.server import EdgeServer\n    return EdgeServer\n")
    assert project_imports(module) == {"edge_student"}
