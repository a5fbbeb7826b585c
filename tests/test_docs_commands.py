"""Every ``python -m ...`` command written in README.md, CONTRIBUTING.md and docs/*.md exists: each
documented module of this repository answers ``--help``, and every ``--flag`` the docs give it is
one its ``--help`` lists, so the docs cannot go stale. Tools from elsewhere (``venv``, ``pytest``)
must be importable. All modules run ``--help`` in one subprocess (torch is imported once)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"(?:\bpython3?|\btorchrun\b[^\n`]*?)\s+-m\s+([A-Za-z_][\w.]*)([^\n`|;&]*)")
FLAG = re.compile(r"(?<![\w.-])(--[a-z][a-z0-9-]*)(?![\w.])")

RUNNER = r"""
import contextlib, io, json, runpy, sys
out = {}
for module in sys.argv[1:]:
    buffer = io.StringIO()
    sys.argv = [module, "--help"]
    code = None
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
        except Exception as exc:
            code = f"{type(exc).__name__}: {exc}"
    out[module] = {"code": code, "help": buffer.getvalue()}
print(json.dumps(out))
"""


def documented_commands() -> dict[str, set[str]]:
    """module -> the ``--flags`` written after it anywhere in the docs (continued lines joined)."""
    commands: dict[str, set[str]] = {}
    for path in DOCS:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for match in COMMAND.finditer(text):
            flags = commands.setdefault(match.group(1), set())
            flags.update(FLAG.findall(match.group(2)))
    return commands


def is_ours(module: str) -> bool:
    path = ROOT / module.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def test_the_docs_name_the_main_commands():
    found = documented_commands()
    for module in ("train.fit", "train.evaluate", "sbanet.predict", "sbanet.summary"):
        assert module in found, module
    assert {"--config", "--resume", "--allow-batch-change"} <= found["train.fit"]


def test_every_documented_module_answers_help_with_the_documented_flags(tmp_path):
    commands = documented_commands()
    ours = sorted(m for m in commands if is_ours(m))
    for module in sorted(set(commands) - set(ours)):
        assert find_spec(module) is not None, f"the docs run `python -m {module}`, which is not installed"
    run = subprocess.run(
        [sys.executable, "-c", RUNNER, *ours], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MPLCONFIGDIR": str(tmp_path)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    problems = []
    for module in ours:
        result = results[module]
        if result["code"] not in (0, None) or "usage" not in result["help"]:
            problems.append(f"python -m {module} --help: exit {result['code']}: {result['help'][-500:]}")
            continue
        unknown = sorted(flag for flag in commands[module] if flag not in result["help"])
        if unknown:
            problems.append(f"the docs give python -m {module} {unknown}, which its --help does not list")
    assert not problems, "\n".join(problems)
