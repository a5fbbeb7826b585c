"""Move modules and files to their homes and rewrite every reference to them; safe to run again.

    python tools/relayout.py            # move what is still at its old place, rewrite references
    python tools/relayout.py --check    # list what would change, change nothing (exit 1 if anything)

What it does, in order:

1. every relative import (``from .x import y``, ``from .. import z``) in a moved file, or of a
   moved module, becomes absolute, resolved against the file's place (a file that was moved and
   still holds a relative import written for its old place is resolved against that old place);
2. each file in :data:`MOVES` (and each match of :data:`GLOB_MOVES`) that is still at its old place
   is moved with ``git mv``; :data:`REMOVED` files still in the tree are removed with ``git rm``;
   the new packages get an ``__init__.py`` (:data:`NEW_PACKAGES`) when they have none;
3. in every tracked text file (code, tests, docs, configs, CI, the README), each old dotted module
   name becomes the new one, ``from package import old_module`` becomes an import from the new
   package under the same local name, an import of a name that moved to another module when its
   module was split (:data:`SYMBOL_MOVES`) imports it from there, and each old file path becomes
   the new one;
4. ruff sorts the imports of and formats the Python files it changed.

On a tree where the moves are done it only rewrites references that came in since (for instance
with a branch merged after the moves). Records of past runs (``benchmarks/results``, the shipped
checkpoints' JSON) are left as they were written.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# old path -> new path, relative to the repository root
MOVES = {
    # the predictor and its helpers: sbanet/inference/
    "sbanet/predictor.py": "sbanet/inference/predictor.py",
    "sbanet/fast.py": "sbanet/inference/fast.py",
    "sbanet/runtime.py": "sbanet/inference/runtime.py",
    "sbanet/precision.py": "sbanet/inference/precision.py",
    "sbanet/confidence.py": "sbanet/inference/confidence.py",
    "sbanet/lexicon.py": "sbanet/inference/lexicon.py",
    "sbanet/default_model.py": "sbanet/inference/shipped.py",
    # one basename per module where two confused: text, examples, config, finetune
    "sbanet/text.py": "sbanet/text_rules.py",
    "sbanet/examples.py": "sbanet/data/example_scenes.py",
    "sbanet/swin_weights.py": "sbanet/modeling/swin_weights.py",
    "train/config.py": "train/fit_config.py",
    "annotate/jobs/finetune.py": "annotate/jobs/finetune_job.py",
    # the release pipeline of the shipped default model: recipes/default_model/
    "train/default_model.py": "recipes/default_model/train.py",
    "train/model_report.py": "recipes/default_model/model_report.py",
    "train/model_card.py": "recipes/default_model/card.py",
    "train/source_report.py": "recipes/default_model/source_report.py",
    "benchmarks/default_model_scale.py": "recipes/default_model/scale.py",
    "configs/default_model.yaml": "recipes/default_model/config.yaml",
    "configs/default_model_v3.yaml": "recipes/default_model/v3.yaml",
}
# names that moved between modules when a module was split: old module -> {name: new module, or
# "new module:new name" where the name changed (importers keep the old name as the local name)
RECORD = "annotate.jobs.finetune_record"
SYMBOL_MOVES: dict[str, dict[str, str]] = {
    "annotate.jobs.finetune_job": {
        **dict.fromkeys(
            ("CANCEL_POLL_S", "FinetuneOutcome", "JobProgress", "PERSIST_EVERY_S", "STAGES", "register_result"), RECORD
        ),
        "_Reporter": f"{RECORD}:Reporter",
        "_Claimed": f"{RECORD}:ClaimedRun",
        "_jsonable": f"{RECORD}:jsonable_metrics",
        "_save_model": f"{RECORD}:save_model",
    },
    "annotate.app.handlers": {
        **dict.fromkeys(
            ("ANONYMOUS", "REFUSED_TITLE", "SERVER_PATH", "annotator", "on_page", "readable", "refusal"),
            "annotate.app.guards",
        ),
        **dict.fromkeys(("uploaded_path", "user_errors"), "annotate.app.guards"),
        **dict.fromkeys(
            ("SegmentSession", "VERDICT_MARKS", "result_details", "summary_markdown"), "annotate.app.results"
        ),
    },
    "recipes.default_model.card": dict.fromkeys(
        (
            "SELECTION",
            "conversion_records",
            "data_lines",
            "loss_phrase",
            "recipe_lines",
            "stage_phrase",
            "training_folders",
            "training_time_lines",
        ),
        "recipes.default_model.provenance",
    ),
    "recipes.default_model.train": dict.fromkeys(
        (
            "CONVERSIONS",
            "DUBAI_INPUT",
            "GID_CONVERSIONS",
            "GID_INPUT",
            "WHOLE_IMAGES",
            "WHOLE_OF",
            "conversion_roots",
            "data_summary",
            "prepare_data",
            "whole_image_folders",
        ),
        "recipes.default_model.conversions",
    ),
    "sbanet.inference.predictor": dict.fromkeys(("MAX_EXPRESSION_CHARS", "check_expression"), "sbanet.text_rules"),
    "sbanet.predict": {"output_paths": "sbanet.geo.scenes"},
    "sbanet.training.evaluation": {"autocast": "sbanet.inference.precision"},  # (device, precision name)
    "benchmarks.speed.measure": {
        "MEASURES": "benchmarks.speed.run",
        "run_case": "benchmarks.speed.run",
        "DTYPES": "sbanet.inference.precision",
        "_build": "benchmarks.speed.measure:build_model",
        "_iou": "benchmarks.speed.measure:mask_iou_of",
        "_predictor": "benchmarks.speed.measure:make_predictor",
        "_setup": "benchmarks.speed.measure:setup_case",
    },
    "sbanet.data.semantic": dict.fromkeys(
        ("IMAGE_SUFFIXES", "LandCoverClass", "class_cases", "decode_label_mask", "find_pairs", "load_palette"),
        "sbanet.data.land_cover",
    ),
}
# old path pattern -> new path template (re.sub on the path): the v5 recipes in progress
GLOB_MOVES = {r"configs/default_model_(v5\w*)\.yaml": r"recipes/default_model/\1.yaml"}
# recipe variants measured and not shipped: their numbers stay in docs/history.md, their files in git
REMOVED = [
    "configs/default_model_v1.yaml",
    "configs/default_model_mix.yaml",
    "configs/default_model_v4.yaml",
    "configs/default_model_v4cap10.yaml",
    "configs/default_model_v4cap20.yaml",
    "configs/default_model_v4n1.yaml",
    "configs/default_model_v4neg10.yaml",
]
NEW_PACKAGES = {
    "sbanet/inference/__init__.py": '"""Inference: the predictor (numpy in, numpy out) and its helpers: the fast path, '
    "the runtime\n(threads, devices), precision, confidence, the lexicon of what a model was taught, "
    'the shipped model."""\n',
    "recipes/__init__.py": '"""Release pipelines of shipped checkpoints: one package per model, each with its '
    'recipe files,\nits training command, its report, its model card and its benchmarks."""\n',
    "recipes/default_model/__init__.py": '"""The shipped default model (sbanet/assets/sbanet-lite-dubai): '
    "its recipe (config.yaml; v3.yaml,\nthe one it replaced; v5*.yaml in progress), training (train), "
    'report, model card (card), the source\nreport and the scale benchmark (scale)."""\n',
}
PACKAGES = ("sbanet", "annotate", "train", "recipes", "benchmarks", "tests", "tools")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh", ".cfg", ".ini", ".json"}
TEXT_NAMES = {"run", "start-postgres"}
# records of what ran: never rewritten
KEEP = tuple(
    re.compile(pattern)
    for pattern in (
        r"^benchmarks/results/",
        r"^sbanet/assets/.*\.json$",
        r"^tools/relayout\.py$",
        r"^tests/test_relayout\.py$",  # it writes old names on purpose
    )
)


def dotted(path: str) -> str:
    """``sbanet/inference/fast.py`` -> ``sbanet.inference.fast``."""
    return path[: -len(".py")].replace("/", ".")


def module_moves() -> dict[str, str]:
    """Old dotted module name -> new one, for every moved Python file."""
    return {dotted(old): dotted(new) for old, new in MOVES.items() if old.endswith(".py")}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def tracked_files() -> list[str]:
    files = git("ls-files", "--cached", "--others", "--exclude-standard").splitlines()
    return sorted({f for f in files if (ROOT / f).is_file()})


def is_text(path: str) -> bool:
    p = Path(path)
    return (p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES) and not any(k.search(path) for k in KEEP)


def module_of(path: str) -> str:
    name = dotted(path)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def module_exists(name: str) -> bool:
    base = ROOT / name.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def resolve(package: str, level: int, module: str | None) -> str:
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - level + 1])
    return f"{base}.{module}" if module else base


def absolute_imports(path: str, text: str) -> str:
    """``text`` with every relative import made absolute (see step 1 of the module)."""
    if not path.endswith(".py") or path.split("/")[0] not in PACKAGES:
        return text
    tree = ast.parse(text)
    module = module_of(path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    old_place = {new: old for old, new in MOVES.items()}.get(path)
    old_package = module_of(old_place).rpartition(".")[0] if old_place else None
    lines = text.splitlines(keepends=True)
    moved = set(module_moves())
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    for node in sorted(relative, key=lambda n: -n.lineno):
        target = resolve(package, node.level, node.module)
        names_ok = node.module or all(module_exists(f"{target}.{a.name}") for a in node.names)
        if old_package and not (module_exists(target) and names_ok):
            target = resolve(old_package, node.level, node.module)
        names = {target, *(f"{target}.{a.name}" for a in node.names)}
        if not (old_place or path in MOVES or names & moved):
            continue  # a relative import among modules that stay where they are
        line = lines[node.lineno - 1]
        lines[node.lineno - 1] = re.sub(r"from\s+\.+[\w.]*\s+import", f"from {target} import", line, count=1)
    return "".join(lines)


def split_module_imports(text: str, moves: dict[str, str], path: str = "") -> str:
    """``from package import old_module [as x], other`` -> an import of the moved module from its
    new package, under the name it had, and the rest as before; ``from module import name`` of
    a name in :data:`SYMBOL_MOVES` -> an import from the name's new module (relative imports of
    such a module, in the file at ``path``, too)."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    module = module_of(path) if path.endswith(".py") else ""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or not n.level)]
    for node in sorted(nodes, key=lambda n: -n.lineno):
        source = resolve(package, node.level, node.module) if node.level else node.module
        symbols = SYMBOL_MOVES.get(moves.get(source, source), {})
        if node.level and not symbols:
            continue  # a relative import of a module that was not split: step 1 handles moves
        moved = [a for a in node.names if f"{source}.{a.name}" in moves or a.name in symbols]
        if not moved:
            continue
        indent = " " * node.col_offset
        new_lines = []
        kept = [a for a in node.names if a not in moved]
        if kept:
            names = ", ".join(f"{a.name} as {a.asname}" if a.asname else a.name for a in kept)
            written = "." * node.level + (node.module or "")
            new_lines.append(f"{indent}from {written} import {names}\n")
        for alias in moved:
            local = alias.asname or alias.name
            if alias.name in symbols:
                parent, _, leaf = symbols[alias.name].partition(":")
                leaf = leaf or alias.name
            else:
                parent, _, leaf = moves[f"{source}.{alias.name}"].rpartition(".")
            new_lines.append(f"{indent}from {parent} import {leaf}" + (f" as {local}" if local != leaf else "") + "\n")
        lines[node.lineno - 1 : node.end_lineno] = new_lines
    return "".join(lines)


def rewrite_references(text: str, moves: dict[str, str], paths: dict[str, str]) -> str:
    """Old dotted names and old file paths in ``text`` -> the new ones (whole names only)."""
    for old, new in sorted(moves.items(), key=lambda kv: -len(kv[0])):
        text = re.sub(rf"(?<![\w.]){re.escape(old)}(?!\w)", new, text)
    for old, new in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        text = re.sub(rf"(?<![\w/.-]){re.escape(old)}(?![\w])", new, text)
    for pattern, template in GLOB_MOVES.items():
        text = re.sub(rf"(?<![\w/.-]){pattern}", template, text)
    return text


def move_files(dry_run: bool) -> list[str]:
    """``git mv`` each file still at its old place; ``git rm`` the removed ones (step 2)."""
    done = []
    moves = dict(MOVES)
    for path in tracked_files():
        for pattern, template in GLOB_MOVES.items():
            if re.fullmatch(pattern, path):
                moves[path] = re.sub(pattern, template, path)
    for old, new in moves.items():
        if not (ROOT / old).exists():
            continue
        if (ROOT / new).exists():
            raise SystemExit(f"both {old} and {new} exist: merge them by hand, then run again")
        done.append(f"move {old} -> {new}")
        if not dry_run:
            (ROOT / new).parent.mkdir(parents=True, exist_ok=True)
            git("mv", old, new)
    for path in REMOVED:
        if (ROOT / path).exists():
            done.append(f"remove {path}")
            if not dry_run:
                git("rm", "-q", path)
    for path, docstring in NEW_PACKAGES.items():
        if not (ROOT / path).exists():
            done.append(f"create {path}")
            if not dry_run:
                (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
                (ROOT / path).write_text(docstring)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/relayout.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="list what would change, change nothing")
    args = parser.parse_args(argv)
    moves = module_moves()
    paths = dict(MOVES)
    changed: list[str] = []
    # step 1 before the moves, so each relative import resolves against the place it was written for
    for path in tracked_files():
        if path.endswith(".py") and is_text(path):
            text = (ROOT / path).read_text()
            new = absolute_imports(path, text)
            if new != text:
                changed.append(path)
                if not args.check:
                    (ROOT / path).write_text(new)
    actions = move_files(args.check)
    for path in tracked_files():
        if not is_text(path):
            continue
        text = (ROOT / path).read_text(encoding="utf-8")
        new = split_module_imports(text, moves, path) if path.endswith(".py") else text
        new = rewrite_references(new, moves, paths)
        if new != text:
            changed.append(path)
            if not args.check:
                (ROOT / path).write_text(new, encoding="utf-8")
    changed = sorted({MOVES.get(path, path) for path in changed})  # step 1 ran before the moves
    for line in actions:
        print(line)
    for path in changed:
        print(f"rewrite {path}")
    python = [p for p in changed if p.endswith(".py") and (ROOT / p).exists()]
    if python and not args.check:
        ruff = [sys.executable, "-m", "ruff"]
        subprocess.run([*ruff, "check", "--select", "I", "--fix", "--quiet", *python], cwd=ROOT, check=False)
        subprocess.run([*ruff, "format", "--quiet", *python], cwd=ROOT, check=False)
    return 1 if args.check and (actions or changed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
