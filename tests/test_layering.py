"""The house's layering, read from the code's imports (every import, lazy ones included).

    ground      qrw/config.py, log.py, checkpoint.py
    shop/       the environment: numpy only, no torch, no language model
    lm/         tokenizer, model, generate: knows nothing of the shop
    grpo.py     GRPO's math: torch only, no module, no optimiser, nothing else of qrw
    the rest    data, sft, rollout, update, rewards, rewriter, runs, scorecard and the commands
    scripts     train_sft.py, train_grpo.py: nothing in qrw/ imports them
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "qrw"
SCRIPTS = {"train_sft", "train_grpo"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path) -> set[str]:
    """Every module name an ``import`` or ``from ... import`` statement in ``path`` names (at any depth)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """qrw module -> the qrw modules and scripts it imports (``from qrw.lm import model`` counts as qrw.lm.model)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            if imported in modules:
                targets.add(imported)
            elif imported.split(".")[0] in SCRIPTS:
                targets.add(imported.split(".")[0])
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_no_import_circle():
    assert find_cycle(import_graph()) is None, f"import circle: {' -> '.join(find_cycle(import_graph()))}"


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert set(find_cycle(graph)) == {"a", "b", "c"}
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_shop_uses_neither_torch_nor_the_language_model():
    for path in (PACKAGE / "shop").rglob("*.py"):
        for name in imported_names(path):
            assert not in_package(name, "torch"), f"{path.name} imports {name}"
            assert not in_package(name, "qrw.lm"), f"{path.name} imports {name}"
    # and nothing it pulls in does either, at import time
    code = ("import sys, qrw.shop.shop, qrw.shop.stats, qrw.shop.relevance, qrw.shop.abtest; "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('qrw.lm')); print(bad)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_language_model_knows_nothing_of_the_shop():
    graph = import_graph()
    for name, targets in graph.items():
        if in_package(name, "qrw.lm"):
            assert not any(in_package(t, "qrw.shop") for t in targets), f"{name} imports {targets}"


def test_grpo_math_is_pure_torch():
    path = PACKAGE / "grpo.py"
    imports = imported_names(path)
    assert not any(in_package(name, "qrw") for name in imports), imports
    assert all(name.split(".")[0] in {"__future__", "torch", "math"} for name in imports), imports
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(base) for base in node.bases}
            assert not bases & {"nn.Module", "torch.nn.Module", "Module"}, f"{node.name} is a module"
        if isinstance(node, ast.Attribute):
            assert ast.unparse(node) not in {"torch.optim", "nn.Module", "torch.nn.Module"}, ast.unparse(node)


def test_no_module_of_the_package_imports_a_script():
    for name, targets in import_graph().items():
        assert not targets & SCRIPTS, f"{name} imports {targets & SCRIPTS}"
