"""castkeep's layers import one way (errors/utils → landmarks → identity → generation → benchmarks → serve → cli →
the public API), and no two modules import each other, even inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lower number = lower layer. A module may import its own layer and the ones below.
LAYERS = {"errors": 0, "utils": 0, "landmarks": 1, "identity": 2, "generation": 3, "benchmarks": 4,
          "serve": 5, "cli": 6, "__init__": 7, "__main__": 8}


def package_modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        # docs/ holds scripts that regenerate the README's pictures: not part of the installed package.
        if relative.parts[0] in {"tests", "docs", ".venv", "build"} or relative.parts[0].startswith("."):
            continue
        name = ".".join(relative.with_suffix("").parts)
        modules[name.removesuffix(".__init__") or "__init__"] = path
    return modules


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """Every castkeep module `module` imports, at the top or inside a function."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package and package != "__init__" else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("castkeep."):
                target = node.module.removeprefix("castkeep.")
            else:
                continue
            names = [f"{target}.{alias.name}" if target else alias.name for alias in node.names]
            resolved = [n for n in names if n in known]
            found.update(resolved or ([target] if target in known else []))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("castkeep.") for a in node.names
                         if a.name.startswith("castkeep.") and a.name.removeprefix("castkeep.") in known)
    found.discard(module)
    return found


def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_every_module_has_a_layer():
    assert {m.split(".")[0] for m in package_modules()} <= set(LAYERS)


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{module} imports {target}" for module, targets in graph().items() for target in targets
                    if layer(target) > layer(module))
    assert upward == []


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The checks above would pass vacuously if function-level imports were missed."""
    edges = graph()
    assert "landmarks.model_pack" in edges["landmarks.detection"]  # imported inside from_pretrained
    assert "identity.store" in edges["cli.store_commands"]
