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


def test_every_row_of_tables_i_to_vi_trains_a_few_steps_on_the_tiny_preset():
    """Each row's network (Table VI's ResNet / LSTM / CLIP encoders included) builds on the tiny
    preset, and two AdamW steps on one 64 px batch leave finite losses and changed weights."""
    import torch

    from sbanet.build import ABLATIONS, build_preset

    assert (
        ablations.main(["--table", "III", "--rows", "lavt+dfs", "--config", "configs/synthetic_tiny.yaml", "--dry-run"])
        == 0
    )
    rows = sorted({row for table in ABLATION_TABLES.values() for row in table})
    assert {"lavt+dfs", "pwam", "tcsa_default", "r101_lstm", "r101_clip", "swin_b_bert"} <= set(rows)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 64, generator=generator)
    ids = torch.randint(1000, 2000, (2, 6), generator=generator)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, 16:40, 20:44] = 1
    with single_thread():
        for row in rows:
            torch.manual_seed(0)
            model = build_preset("sbanet_tiny", ablation=row).train()
            for name, value in ABLATIONS[row].items():
                assert getattr(model.config, name) == value, (row, name)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            before = (
                model.decoder.state_dict()["classifier.weight"].clone()
                if hasattr(model.decoder, "classifier")
                else None
            )
            losses = []
            for _ in range(2):
                loss = model.loss(model(images, ids, mask), target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            assert all(torch.isfinite(torch.tensor(losses))), row
            if before is not None:
                assert not torch.equal(before, model.decoder.state_dict()["classifier.weight"]), row
