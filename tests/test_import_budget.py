"""What light entry points import: ``import sbanet`` and ``python -m sbanet.predict --help`` (or an
argument error) answer without torch, and nothing in ``sbanet`` pulls gradio. Each check runs in
a fresh interpreter and reads its ``sys.modules``: module lists, not timings (a whole command's
time is measured by ``python -m benchmarks.startup``, docs/benchmarks.md "Fast where people
wait")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sbanet.inference.shipped import SHIPPED_MODEL

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "gradio", "transformers", "timm", "matplotlib", "shapely", "pyproj", "sqlalchemy")

# runs sbanet.predict as ``python -m`` would with the given argv, then prints the heavy modules
# that got imported and the exit status
RUN_PREDICT = """
import json, runpy, sys
argv, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["python -m sbanet.predict", *argv]
code = 0
try:
    runpy.run_module("sbanet.predict", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def loaded_by(code: str, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_sbanet_loads_no_torch_and_no_gradio():
    probe = "import json, sys, sbanet; print(json.dumps({'loaded': sorted(m for m in %r if m in sys.modules)}))"
    assert loaded_by(probe % (HEAVY,))["loaded"] == []


def test_sbanet_names_still_load_on_use():
    probe = (
        "import json, sys, sbanet\n"
        "names = [sbanet.SBANetConfig.__name__, sbanet.build_preset.__name__, sorted(sbanet.PRESETS)[0]]\n"
        "print(json.dumps({'names': names, 'torch': 'torch' in sys.modules, 'gradio': 'gradio' in sys.modules}))"
    )
    found = loaded_by(probe)
    assert found["names"][:2] == ["SBANetConfig", "build_preset"]
    assert found["torch"] and not found["gradio"]  # the builders need torch, never gradio


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["scene.tif", "the water", "--threshold", "not-a-number"], 2),  # refused while parsing
        (["scene.tif", "the water", "--bands", "0,1"], 2),
    ],
)
def test_predict_answers_help_and_argument_errors_without_torch(argv, code):
    found = loaded_by(RUN_PREDICT, json.dumps(argv), json.dumps(HEAVY))
    assert found["code"] == code
    assert found["loaded"] == []


def test_import_time_names_no_heavy_package_for_help():
    """``python -X importtime -m sbanet.predict --help``: the measurement the docs cite, read
    for module names (it lists every module imported, with its cost)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sbanet.predict", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert {"sbanet", "sbanet.geo.scenes"} <= imported  # the command's own modules are listed
    assert not {name for name in imported if name.split(".")[0] in HEAVY}


def test_predicting_a_small_image_imports_neither_transformers_nor_timm(tmp_path):
    """The shipped model's text encoder is a BERT read from local files, its visual encoder an
    EfficientNet-Lite0 whose weights the checkpoint holds: the command builds both in plain
    PyTorch (sbanet.modeling.plain_bert, plain_tokenizer, plain_efficientnet), never through
    transformers or timm (whose imports pull torchvision and torch._dynamo)."""
    from PIL import Image

    image = tmp_path / "tile.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 240, 3), dtype=np.uint8)).save(image)
    argv = [str(image), "the water", "--model", str(SHIPPED_MODEL), "-o", str(tmp_path / "mask.png"), "-q"]
    found = loaded_by(RUN_PREDICT, json.dumps(argv), json.dumps(HEAVY))
    assert found["code"] == 0
    assert (tmp_path / "mask.png").is_file()
    assert "torch" in found["loaded"]  # it did run the model
    assert "transformers" not in found["loaded"] and "timm" not in found["loaded"]
    # no polygons asked: neither shapely nor pyproj (sbanet.geo.vector, the folder summary)
    assert "shapely" not in found["loaded"] and "pyproj" not in found["loaded"]
