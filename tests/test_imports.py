"""Imports read top-down: no module of mtdnn/ or scripts/ imports, even inside a function, one that imports it
back; and the library never imports the experiments built on it."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mtdnn", "scripts")


def imports_of(path: Path, package: str) -> set[str]:
    """The modules of PACKAGES a file of `package` imports, at the top or inside functions (relative imports
    too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: `from . import x`, `from .x import y`
                module = f"{package}.{node.module}" if node.module else package
            else:
                module = node.module or ""
            if module in PACKAGES:
                found.update(f"{module}.{alias.name}" for alias in node.names)
            elif module.split(".")[0] in PACKAGES:
                found.add(module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of PACKAGES it imports."""
    return {f"{package}.{path.stem}": imports_of(path, package)
            for package in PACKAGES for path in (REPO / package).glob("*.py") if path.stem != "__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, path = {}, []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return path[path.index(imported):] + [imported]
            if imported in graph and imported not in state and (cycle := visit(imported)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    return next((cycle for module in sorted(graph) if module not in state and (cycle := visit(module))), None)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_of_reads_every_form(tmp_path):
    path = tmp_path / "driver.py"
    path.write_text("import scripts.jobs\nfrom scripts import plan, stats\nfrom scripts.results import ResultStore\n"
                    "from . import report\nfrom .subsets import write_subset\nimport os\n\n"
                    "def later():\n    from mtdnn.training import train\n")
    assert imports_of(path, "scripts") == {"scripts.jobs", "scripts.plan", "scripts.stats", "scripts.results",
                                           "scripts.report", "scripts.subsets", "mtdnn.training"}


def test_no_import_cycle_in_the_package_or_the_experiments():
    graph = import_graph()
    assert sum(module.startswith("mtdnn.") for module in graph) > 20
    assert sum(module.startswith("scripts.") for module in graph) > 15
    assert {"scripts.reproduce_report", "scripts.ablation_report"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_library_never_imports_the_experiments():
    upward = [f"{module} -> {imported}" for module, imports in import_graph().items() if module.startswith("mtdnn.")
              for imported in sorted(imports) if imported.startswith("scripts.")]
    assert not upward
