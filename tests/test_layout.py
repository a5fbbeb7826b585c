"""The layout's rules, read from the imports of every module (CONTRIBUTING.md, "Layout"):

* ``sbanet`` (the model library) never imports ``annotate``, ``train``, ``recipes``, ``benchmarks``
  or ``gradio``;
* ``annotate.store`` never imports ``gradio``, ``annotate.app`` or ``annotate.jobs``; ``annotate.jobs``
  never imports ``annotate.app``; ``annotate.edit`` (the mask tools) imports none of ``gradio``,
  ``annotate.app``, ``annotate.store`` or ``annotate.jobs``; ``annotate`` never imports ``train``;
* nothing but ``benchmarks`` itself and the tests imports ``benchmarks``; only ``benchmarks``
  imports ``recipes`` (the release pipelines);
* no two modules import each other, directly or round a longer circle;
* an own-module import sits at the top of its module, not inside a function, except in the few
  modules of :data:`NESTED_ALLOWED` (each says why);
* ``sbanet`` exports the public API (:data:`PUBLIC_API`);
* and the store runs where Gradio is not installed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package (dotted prefix of the importing module) -> module prefixes it must not import
FORBIDDEN = {
    "sbanet": ("annotate", "train", "recipes", "benchmarks", "gradio", "app"),
    "annotate.store": ("gradio", "annotate.app", "annotate.jobs", "train", "recipes", "benchmarks"),
    "annotate.jobs": ("gradio", "annotate.app", "train", "recipes", "benchmarks"),
    "annotate.edit": ("gradio", "annotate.app", "annotate.store", "annotate.jobs", "train", "recipes", "benchmarks"),
    "annotate": ("train", "recipes", "benchmarks"),
    "train": ("recipes", "benchmarks", "gradio"),
    "recipes": ("benchmarks", "gradio", "annotate.app"),
    "app": ("benchmarks", "train", "recipes"),
}
# module (or package) -> why its own-module imports may wait inside functions
NESTED_ALLOWED = {
    "app": "the app's modules (gradio, torch) load once the arguments are parsed: --help answers at once",
    "sbanet.predict": "the scene runner (torch) loads once the arguments are parsed: --help answers at once",
    "annotate.store": "images and rasters are decoded (PIL, rasterio) only when a file is read: the store starts light",
    "benchmarks": "a benchmark loads what it measures once its arguments are parsed",
    "sbanet.geo.scene_run": "polygons (shapely, pyproj) load only for --vector: a mask command starts light",
    "sbanet.geo.scene_summary": "polygons (sbanet.geo.vector: shapely, pyproj) load only when a scene has them",
}
PUBLIC_API = {
    "Predictor": "sbanet.inference.predictor",
    "Prediction": "sbanet.inference.predictor",
    "load_pretrained": "sbanet.checkpoint",
    "save_pretrained": "sbanet.checkpoint",
    "build_preset": "sbanet.build",
    "Precision": "sbanet.inference.precision",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved against its package),
    at any depth of the file (imports inside functions count too)."""
    package = package_of(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            found.add(import_source(node, package))
        found.update(import_targets(node, package))
    return found


def package_of(path: Path) -> str:
    """The package that relative imports in ``path`` are resolved against."""
    module = module_name(path)
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def import_source(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` statement reads from."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def import_targets(node: ast.AST, package: str) -> list[str]:
    """What an import statement names, absolute: modules, or ``source.name`` for ``from source
    import name`` (a submodule, or a name in source: "from annotate import app"); [] for other nodes."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        source = import_source(node, package)
        return [f"{source}.{alias.name}" for alias in node.names]
    return []


def modules() -> list[Path]:
    files = [ROOT / "app.py"]
    for top in ("sbanet", "annotate", "train", "recipes", "benchmarks"):
        files += sorted((ROOT / top).rglob("*.py"))
    return files


def rule_for(name: str) -> tuple[str, tuple[str, ...]] | None:
    """The most specific :data:`FORBIDDEN` entry that applies to module ``name``."""
    owners = [p for p in FORBIDDEN if name == p or name.startswith(p + ".")]
    return (max(owners, key=len), FORBIDDEN[max(owners, key=len)]) if owners else None


def test_every_package_imports_only_downhill():
    broken = []
    for path in modules():
        name = module_name(path)
        rule = rule_for(name)
        if rule is None:
            continue
        owner, forbidden = rule
        for target in imported_modules(path):
            if any(target == f or target.startswith(f + ".") for f in forbidden):
                broken.append(f"{name} imports {target} ({owner} must not import {', '.join(forbidden)})")
    assert not broken, "\n".join(sorted(set(broken)))


def test_the_rules_see_relative_and_nested_imports(tmp_path):
    # the reader itself: a relative import two levels up, and one inside a function
    path = ROOT / "annotate" / "store" / "database.py"
    assert "sqlalchemy" in {t.split(".")[0] for t in imported_modules(path)}
    found = imported_modules(ROOT / "annotate" / "app" / "backend.py")
    assert any(t.startswith("annotate.store.") for t in found) and any(t.startswith("sbanet.") for t in found)
    assert rule_for("annotate.store.repository")[0] == "annotate.store" and rule_for("annotate.app.ui")[0] == "annotate"


def own_module(target: str, names: set[str]) -> str | None:
    """The project module an import target names (``"sbanet.build.build_preset"`` ->
    ``"sbanet.build"``), or None for another library's."""
    while target and target not in names:
        target = target.rpartition(".")[0]
    return target or None


def own_imports(path: Path, names: set[str]) -> list[tuple[int, str, bool]]:
    """``(line, module, inside a function)`` for every import of a project module in ``path``."""
    module, package = module_name(path), package_of(path)
    tree = ast.parse(path.read_text(), str(path))
    inside = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
    }
    found = []
    for node in ast.walk(tree):
        targets = import_targets(node, package)
        for target in {own_module(t, names) for t in targets} - {None, module}:
            found.append((node.lineno, target, id(node) in inside))
    return found


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """module -> the project modules it imports (anywhere in it), and the function-level imports."""
    files = modules()
    names = {module_name(path) for path in files}
    graph: dict[str, set[str]] = {}
    nested = []
    for path in files:
        name = module_name(path)
        for line, target, inside in own_imports(path, names):
            graph.setdefault(name, set()).add(target)
            if inside:
                nested.append(f"{path.relative_to(ROOT)}:{line} imports {target} inside a function")
    return graph, nested


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_modules_import_each_other():
    graph, _ = import_graph()
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the reader itself
    assert circles(graph) == []


def test_own_module_imports_sit_at_the_top():
    _, nested = import_graph()
    hidden = [line for line in nested if rule_for_nested(line.split(":")[0]) is None]
    assert not hidden, "\n".join(hidden)
    assert rule_for_nested("annotate/store/files.py") and not rule_for_nested("annotate/app/ui.py")


def rule_for_nested(path: str) -> str | None:
    """Why the module at ``path`` may import inside functions (:data:`NESTED_ALLOWED`), or None."""
    name = module_name(ROOT / path)
    owners = [p for p in NESTED_ALLOWED if name == p or name.startswith(p + ".")]
    return NESTED_ALLOWED[max(owners, key=len)] if owners else None


def test_sbanet_exports_the_public_api():
    import sbanet

    for name, module in PUBLIC_API.items():
        assert name in sbanet.__all__ and name in dir(sbanet), name
        assert getattr(sbanet, name).__module__ == module, name


BLOCK_GRADIO = """
import sys

class _NoGradio:
    def find_spec(self, name, path=None, target=None):
        if name == "gradio" or name.startswith("gradio."):
            raise ImportError("gradio is not installed here")
        return None

sys.meta_path.insert(0, _NoGradio())
import pkgutil, importlib
import annotate.store
for info in pkgutil.walk_packages(annotate.store.__path__, "annotate.store."):
    if ".alembic" not in info.name:
        importlib.import_module(info.name)
from annotate.store.database import make_store
from annotate.store import repository
store = make_store("sqlite://")
with store.Session() as session:
    print("ok", repository.__name__, "gradio" in sys.modules)
"""


@pytest.mark.timeout(120)
def test_the_store_runs_without_gradio():
    result = subprocess.run([sys.executable, "-c", BLOCK_GRADIO], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", "annotate.store.repository", "False"]
