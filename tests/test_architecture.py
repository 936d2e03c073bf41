"""Architecture rules that reviews would otherwise have to catch.

* Dependency direction: ``models`` imports none of edge/server/sim/cellwatch; ``edge`` and
  ``server`` never import each other; ``sim`` imports only ``models`` of ours.
* The gateway set: ``models`` and ``edge`` do not import scikit-learn, FastAPI or uvicorn, so an
  ``edge`` install stays small.
* Every module's ``__all__`` lists exactly its public top-level names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "edge", "server", "sim", "cellwatch")
FORBIDDEN = {
    "models": {
        "edge",
        "server",
        "sim",
        "cellwatch",
        "sklearn",
        "fastapi",
        "uvicorn",
        "asyncua",
        "paho",
        "asyncio",
        "httpx",
        "sqlite3",
    },
    "edge": {"server", "sim", "cellwatch", "sklearn", "fastapi", "uvicorn"},
    "server": {"edge", "sim", "cellwatch"},
    "sim": {"edge", "server", "cellwatch"},
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_all_packages_exist() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package: str) -> None:
    bad = {
        f"{p.relative_to(ROOT)} imports {name}"
        for p in _modules(package)
        for name in _imports(p) & FORBIDDEN[package]
    }
    assert bad == set()


def _public_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize(
    "path",
    [p for pkg in PACKAGES for p in _modules(pkg) if p.name not in ("__main__.py",)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_dunder_all_matches_public_classes_and_functions(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    declared = None
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else ([node.target] if isinstance(node, ast.AnnAssign) else [])
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            declared = set(ast.literal_eval(node.value))
    assert declared is not None, f"{path.relative_to(ROOT)} has no __all__"
    if path.name == "__init__.py":
        return  # re-exports; checked by importing them
    missing = _public_names(tree) - declared
    assert missing == set(), f"public but not in __all__: {sorted(missing)}"
    defined = (
        _public_names(tree)
        | {
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)
        }
        | {
            a.asname or a.name
            for node in tree.body
            if isinstance(node, ast.ImportFrom)
            for a in node.names
        }
    )
    stale = declared - defined
    assert stale == set(), f"__all__ names that do not exist: {sorted(stale)}"


@pytest.mark.parametrize("package", PACKAGES)
def test_package_all_imports(package: str) -> None:
    mod = __import__(package, fromlist=["__all__"])
    for name in getattr(mod, "__all__", []):
        assert hasattr(mod, name), f"{package}.__all__ names {name}, which it does not have"
