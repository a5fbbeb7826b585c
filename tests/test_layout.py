"""The layout's rules, read from the imports of every module (DEVELOPERS.md, "Layout"):

* ``sbanet`` (the model library) never imports ``annotate``, ``train``, ``benchmarks`` or ``gradio``;
* ``annotate.store`` never imports ``gradio``, ``annotate.app`` or ``annotate.jobs``; ``annotate.jobs``
  never imports ``annotate.app``; ``annotate.edit`` (the mask tools) imports none of ``gradio``,
  ``annotate.app``, ``annotate.store`` or ``annotate.jobs``; ``annotate`` never imports ``train``;
* nothing but ``benchmarks`` itself and the tests imports ``benchmarks``;
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
    "sbanet": ("annotate", "train", "benchmarks", "gradio", "app"),
    "annotate.store": ("gradio", "annotate.app", "annotate.jobs", "train", "benchmarks"),
    "annotate.jobs": ("gradio", "annotate.app", "train", "benchmarks"),
    "annotate.edit": ("gradio", "annotate.app", "annotate.store", "annotate.jobs", "train", "benchmarks"),
    "annotate": ("train", "benchmarks"),
    "train": ("benchmarks", "gradio"),
    "app": ("benchmarks", "train"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved against its package),
    at any depth of the file (imports inside functions count too)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # "from annotate import app"
    return found


def modules() -> list[Path]:
    files = [ROOT / "app.py"]
    for top in ("sbanet", "annotate", "train", "benchmarks"):
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
