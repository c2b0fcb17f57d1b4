"""The layout is the architecture: imports go one way, the core needs no deep-learning stack."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ensemble_kit"
# errors -> metrics -> store -> decision -> ensemble -> train -> project -> report -> cli
LAYERS = {
    "errors": 0, "_version": 0, "_optional": 0, "_config": 0, "_registry": 0, "_lazy": 0, "_progress": 0,
    "metrics": 1, "store": 2, "decision": 3, "ensemble": 4,
    "train": 5, "data": 5,  # the image data sources and transforms are the trainer's inputs
    "project": 6, "report": 7, "cli": 8,
}
ROOT_API_LAYER = 4  # ``ensemble_kit/__init__.py`` re-exports the core: store, decision, ensemble
DEEP_LEARNING = ("torch", "torchvision", "timm", "albumentations")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return ROOT_API_LAYER
    return LAYERS[parts[1]]


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Every ``ensemble_kit`` import, top-level or inside functions, except ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("ensemble_kit")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ensemble_kit"):
            found.append((node.lineno, node.module))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        graph[module] = {target for _, target in _runtime_imports(ast.parse(path.read_text()))} - {module}
    return graph


def test_every_module_belongs_to_a_layer():
    assert sorted({m.split(".")[1] for m in _graph() if "." in m} - set(LAYERS)) == []


def test_imports_never_go_up_a_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        for line, target in _runtime_imports(ast.parse(path.read_text())):
            if target == "ensemble_kit" and module != "ensemble_kit":
                upward.append(f"{module}:{line} imports the root package (import from the layer module instead)")
            elif _layer(target) > _layer(module):
                upward.append(f"{module}:{line} -> {target}")
    assert upward == []


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


_CORE_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    import ensemble_kit
    from ensemble_kit import LogitStore, Stacker

    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    oof = {f"m{i}": np.eye(3)[y] * (1 + i) + rng.normal(size=(150, 3)) for i in range(3)}
    fast = {"catboost__params": {"iterations": 20}, "lightgbm__params": {"num_boost_round": 20}}
    Stacker.from_recipe("full", n_trials=4).set_params(**fast).fit(oof, y).predict_proba(oof)
    store = LogitStore.create(sys.argv[1] + "/s", np.arange(150), y, [0, 1, 2], n_folds=3, test_ids=np.arange(10))
    for name, values in oof.items():
        store.put(name, values, values[:10])
    from ensemble_kit.cli.main import main
    assert main(["stack", sys.argv[1] + "/s", "--recipe", "hill_climb"]) == 0
    assert main(["submit", sys.argv[1] + "/s", "--out", sys.argv[1] + "/sub.csv"]) == 0
    assert main(["ls", sys.argv[1] + "/s"]) == 0
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in {DEEP!r})
    print("LOADED", loaded)
""").replace("{DEEP!r}", repr(set(DEEP_LEARNING)))


def test_stacking_a_bring_your_own_store_needs_no_deep_learning_package(tmp_path):
    result = subprocess.run([sys.executable, "-c", _CORE_RUN, str(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOADED []" in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize("module", ["ensemble_kit.train.config", "ensemble_kit.project.results",
                                    "ensemble_kit.project.config", "ensemble_kit.report"])
def test_light_modules_of_heavy_packages_import_without_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in {set(DEEP_LEARNING)!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
