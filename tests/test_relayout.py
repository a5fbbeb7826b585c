"""``tools/relayout.py`` moved every module to its home: the tree holds no old path, and code written
against the old names (a branch merged after the moves) is rewritten to the new ones."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def relayout():
    spec = importlib.util.spec_from_file_location("relayout", ROOT / "tools" / "relayout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_the_tree_is_relaid_out(relayout, capsys):
    assert relayout.main(["--check"]) == 0, capsys.readouterr().out  # nothing left to move or rewrite
    assert not any((ROOT / old).exists() for old in relayout.MOVES)


def test_old_names_in_new_code_are_rewritten(relayout):
    old = (
        "from sbanet.predictor import Predictor\n"
        "from sbanet import build_preset, fast as fast_module\n"
        "from train import default_model as recipe\n"
        "from sbanet.data.semantic import DUBAI_CLASSES, decode_label_mask\n"
        "from annotate.jobs.finetune import _Reporter, run_finetune\n"
        "# python -m train.default_model --config configs/default_model_v5_cpu2.yaml\n"
    )
    moves = relayout.module_moves()
    new = relayout.rewrite_references(relayout.split_module_imports(old, moves, "tests/x.py"), moves, relayout.MOVES)
    assert new.splitlines() == [
        "from sbanet.inference.predictor import Predictor",
        "from sbanet import build_preset",
        "from sbanet.inference import fast as fast_module",
        "from recipes.default_model import train as recipe",
        "from sbanet.data.semantic import DUBAI_CLASSES",
        "from sbanet.data.land_cover import decode_label_mask",
        "from annotate.jobs.finetune_job import run_finetune",
        "from annotate.jobs.finetune_record import Reporter as _Reporter",
        "# python -m recipes.default_model.train --config recipes/default_model/v5_cpu2.yaml",
    ]
    assert relayout.rewrite_references(new, moves, relayout.MOVES) == new  # a second run changes nothing


def test_a_relative_import_written_for_the_old_place_is_resolved_there(relayout):
    text = "from .runtime import expression_chunk\nfrom .checkpoint import load_pretrained\n"
    assert relayout.absolute_imports("sbanet/inference/fast.py", text).splitlines() == [
        "from sbanet.inference.runtime import expression_chunk",  # exists beside the new place
        "from sbanet.checkpoint import load_pretrained",  # only beside the old one
    ]
