"""``python -m train.ablations``: each table's rows, their sizes, and a real (tiny) run of one row."""

from __future__ import annotations

import pytest
from test_train_cli import SYNTHETIC
from training_fixtures import single_thread

from sbanet.build import ABLATION_TABLES, PRESET_CONFIGS, build_model, count_parameters
from train import ablations


@pytest.mark.parametrize("table", sorted(ABLATION_TABLES))
def test_dry_run_prints_every_row_with_its_parameters(table, capsys, tmp_path):
    argv = ["--table", table, "--config", "configs/synthetic_tiny.yaml", "--dry-run", f"output.dir={tmp_path}"]
    assert ablations.main(argv) == 0
    out = capsys.readouterr().out
    for row in ABLATION_TABLES[table]:
        assert f"{row} " in out and str(tmp_path / row) in out
    if table == "III":  # the totals are the built models' sizes
        lavt = build_model(PRESET_CONFIGS["sbanet_tiny"](bam=False, dfs=False, tcsa=False, image_size=128))
        assert f"total {count_parameters(lavt):,}" in out
    assert not any(tmp_path.iterdir())  # a dry run trains and writes nothing


def test_runs_rows_through_fit_and_skips_finished_ones(capsys, tmp_path):
    argv = ["--table", "V", "--rows", "tcsa_no_text", "--config", "configs/synthetic_tiny.yaml", *SYNTHETIC]
    argv.append(f"output.dir={tmp_path}")
    with single_thread():
        assert ablations.main(argv) == 0
    assert (tmp_path / "tcsa_no_text" / "best.pt").is_file()
    assert not (tmp_path / "tcsa_full").exists()
    assert ablations.main(argv) == 0
    assert "exists, skipped" in capsys.readouterr().out


def test_bad_table_rows_are_refused(capsys):
    assert ablations.main(["--table", "III", "--rows", "tcsa_no_text", "--config", "configs/synthetic_tiny.yaml"]) == 2
    assert "not in Table III" in capsys.readouterr().err
