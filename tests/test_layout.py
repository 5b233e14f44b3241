"""The architecture's rules about imports: `shared` <- tiers <- app; inside `shared`, its parts in one order; on the
edge, two doors over one service. Nothing points back up, nothing goes round in a circle."""

from __future__ import annotations

import ast
from collections.abc import Iterable
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

# The parts of `shared`, bottom first (the README's "Layout" says why): a part may import itself and the parts of
# lower ranks, never one of its own rank or above.
SHARED_RANKS = {
    "shared.pricing": 0,  # leaves: they import nothing of the project
    "shared.catalog": 0,
    "shared.protocol": 1,  # domain types and errors, validation, wire stubs and their conversion
    "shared.hardware": 2,  # this machine, and the ServerInfo a tier reports
    "shared.prompt_formats": 3,
    "shared.llama": 4,
    "shared.metrics": 5,
    "shared.server": 6,
    "shared.launch": 6,
}
# The edge's two doors: each adapts the transport-neutral service and neither imports the other.
GRPC_DOOR = ("edge_student.servicer",)
HTTP_DOOR = ("edge_student.openai_http", "edge_student.openai_convert", "edge_student.openai_types")
SERVICE = ("edge_student.service",)  # what both doors adapt: it imports neither


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the project modules (or packages) a file imports, lazily inside functions too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from shared.protocol import errors` imports the module `shared.protocol.errors`
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PROJECT)
    return found


def project_imports(path: Path) -> set[str]:
    """Top-level project packages a module imports (lazily inside functions too)."""
    return {name.split(".")[0] for name in imported_modules(path)}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str, parts: Iterable[str]) -> str | None:
    """The part (a dotted prefix from `parts`) a module belongs to."""
    return next((part for part in parts if module == part or module.startswith(part + ".")), None)


def outermost(names: set[str]) -> list[str]:
    """The names without those inside another of them (`a.b` for `from a.b import C`, not also `a.b.C`)."""
    return sorted(name for name in names if not any(name.startswith(other + ".") for other in names))


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(project_imports(path) - ALLOWED[package])
        for path in sources(package)
        if project_imports(path) - ALLOWED[package]
    }
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}; found {wrong}"


def shared_violations(files: dict[str, set[str]]) -> list[str]:
    """`module -> target` for every import inside `shared` that does not point down (modules: their imports)."""
    wrong = []
    for module, imports in files.items():
        if module == "shared":
            continue  # the package's own __init__
        source = part_of(module, SHARED_RANKS)
        assert source is not None, f"{module} is in no part of shared: give it a rank in SHARED_RANKS"
        for target in outermost(imports):
            part = part_of(target, SHARED_RANKS)
            if part is None or part == source:
                continue
            if SHARED_RANKS[part] >= SHARED_RANKS[source]:
                wrong.append(f"{module} -> {target}")
    return wrong


def test_the_parts_of_shared_import_only_lower_parts() -> None:
    files = {module_name(path): imported_modules(path) for path in sources("shared")}
    wrong = shared_violations(files)
    assert not wrong, f"imports inside shared must point down ({' < '.join(SHARED_RANKS)}); found {wrong}"


def door_violations(files: dict[str, set[str]]) -> list[str]:
    """`module -> target` for every import from one edge door into the other, or from the service into a door."""
    wrong = []
    for module, imports in files.items():
        for mine, other in ((GRPC_DOOR, HTTP_DOOR), (HTTP_DOOR, GRPC_DOOR), (SERVICE, GRPC_DOOR + HTTP_DOOR)):
            if part_of(module, mine) is not None:
                wrong.extend(f"{module} -> {target}" for target in outermost(imports) if part_of(target, other))
    return wrong


def test_the_edge_doors_do_not_import_each_other() -> None:
    files = {module_name(path): imported_modules(path) for path in sources("edge_student")}
    wrong = door_violations(files)
    assert not wrong, f"the gRPC servicer and the HTTP routes adapt edge_student.service, not each other: {wrong}"


def circles(files: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among the given modules (each as the path that closes it)."""
    graph = {
        module: {target for target in imports if target in files and target != module}
        for module, imports in files.items()
    }
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], module, target])
            elif target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    return found


@pytest.mark.parametrize("package", ["shared", *TIERS])
def test_no_module_imports_itself_in_a_circle(package: str) -> None:
    files = {module_name(path): imported_modules(path) for path in sources(package)}
    assert not circles(files), f"import circles in {package}: {circles(files)}"


def test_the_rule_would_catch_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from edge_student.server import EdgeServer\n    return EdgeServer\n")
    assert project_imports(module) == {"edge_student"}


def test_the_rules_would_catch_a_wrong_way_import_inside_shared_and_a_door_to_door_import() -> None:
    # the imports this layout removed: protocol -> server, llama -> server, validation <-> prompt_formats,
    # llama -> metrics, and the HTTP door reaching into the gRPC servicer
    assert shared_violations(
        {
            "shared.protocol.convert": {"shared.server.settings_base"},
            "shared.llama.engine": {"shared.server.errors"},
            "shared.protocol.validation": {"shared.prompt_formats"},
            "shared.llama.engine_settings": {"shared.metrics"},
            "shared.prompt_formats": {"shared.protocol.domain"},  # down: allowed
            "shared.metrics": {"shared.llama.engine"},  # down: allowed
        }
    ) == [
        "shared.protocol.convert -> shared.server.settings_base",
        "shared.llama.engine -> shared.server.errors",
        "shared.protocol.validation -> shared.prompt_formats",
        "shared.llama.engine_settings -> shared.metrics",
    ]
    assert door_violations(
        {
            "edge_student.openai_http.serving": {"edge_student.servicer", "edge_student.service"},
            "edge_student.servicer": {"edge_student.openai_convert"},
            "edge_student.service": {"edge_student.servicer", "edge_student.answer_flow"},
        }
    ) == [
        "edge_student.openai_http.serving -> edge_student.servicer",
        "edge_student.servicer -> edge_student.openai_convert",
        "edge_student.service -> edge_student.servicer",
    ]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
