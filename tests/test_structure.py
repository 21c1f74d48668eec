"""The shape of the tree: no import cycle among batchledger's modules, no module too long to
read, the import-linter contracts kept, and a function for every command of the parser."""

import argparse
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import batchledger
from batchledger.cli import build_parser
from batchledger.cli.main import HANDLERS

PACKAGE = Path(batchledger.__file__).parent
MAX_LINES = 600

# Imports that close a cycle today, each with the cycle it closes. Nothing else may: a new
# cycle fails test_no_import_cycle, naming its modules. When an entry's import is gone, the
# test says so, and the entry goes (as the same imports in pyproject.toml's contracts).
KNOWN_CYCLE_IMPORTS: dict[tuple[str, str], str] = {}

# Modules over MAX_LINES today, each at most as long as it is now (it may shrink, not grow).
KNOWN_LONG_MODULES: dict[str, int] = {}


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (each holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    """A cycle's modules and, for each import among them, the line that makes it."""
    lines = [" <-> ".join(cycle)]
    for importer in cycle:
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported in cycle:
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    lines.append(f"  {importer}:{detail['line_number']}: {detail['line_contents']}")
    return "\n".join(lines)


@pytest.fixture
def graph() -> grimp.ImportGraph:
    # Imports inside functions count: they are cycles all the same, only hidden.
    return grimp.build_graph("batchledger", cache_dir=None)


def test_no_import_cycle(graph: grimp.ImportGraph):
    gone = [
        edge
        for edge in KNOWN_CYCLE_IMPORTS
        if not graph.direct_import_exists(importer=edge[0], imported=edge[1])
    ]
    assert not gone, f"no longer imported, remove from KNOWN_CYCLE_IMPORTS: {gone}"
    for importer, imported in KNOWN_CYCLE_IMPORTS:
        graph.remove_import(importer=importer, imported=imported)

    cycles = import_cycles(graph)

    assert not cycles, "import cycles in batchledger:\n" + "\n".join(
        describe(graph, cycle) for cycle in cycles
    )


def test_the_cycle_search_finds_a_cycle_of_three_and_names_it():
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=importer, imported=imported, line_number=1, line_contents="x")

    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert describe(graph, ["p.a", "p.b", "p.c"]).splitlines()[0] == "p.a <-> p.b <-> p.c"


def test_the_known_cycles_are_found_without_their_allowance(graph: grimp.ImportGraph):
    # The allowance is what keeps test_no_import_cycle passing today: without it, each known
    # import is part of a cycle the search reports.
    cycles = import_cycles(graph)

    for importer, imported in KNOWN_CYCLE_IMPORTS:
        assert any(importer in cycle and imported in cycle for cycle in cycles)


def test_no_module_over_600_lines():
    too_long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("emulator/"):
            continue  # a test double of the API, not the tool
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > KNOWN_LONG_MODULES.get(relative, MAX_LINES):
            too_long[relative] = lines
    assert not too_long, f"modules over {MAX_LINES} lines (or longer than allowed): {too_long}"

    shrunk = [
        name
        for name in KNOWN_LONG_MODULES
        if not (PACKAGE / name).exists()
        or len((PACKAGE / name).read_text(encoding="utf-8").splitlines()) <= MAX_LINES
    ]
    assert not shrunk, f"gone or short enough now, remove from KNOWN_LONG_MODULES: {shrunk}"


def test_every_command_of_the_parser_has_its_function_in_main():
    subcommands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )

    assert set(subcommands.choices) == set(HANDLERS)


def test_the_import_contracts_are_kept(tmp_path: Path):
    # pyproject.toml's [tool.importlinter]: the layers, the CLI's, no cycle, the emulator apart.
    lint_imports = Path(sys.executable).parent / "lint-imports"
    root = PACKAGE.parent
    run = subprocess.run(
        [str(lint_imports), "--no-cache", str(root / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_every_module_has_its_line_in_the_readme_layout():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("### Layout\n") : readme.index("### Dependencies\n")]
    modules = [
        path.relative_to(PACKAGE)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
        and path.relative_to(PACKAGE).parts[0] != "emulator"  # one line for the package
    ]

    assert "`batchledger/emulator/`" in layout
    missing = [str(module) for module in modules if f"`{module.name}`" not in layout]
    assert not missing, f"README's Layout names no line for: {missing}"
