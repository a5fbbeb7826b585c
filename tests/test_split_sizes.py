"""A split that lost files against its published size is refused (a partial download), one that
is not the published dataset is named in a warning, and ``check_size=False`` opts out."""

from __future__ import annotations

import logging

import pytest
from test_data_readers import _write_refsegrs

from sbanet.data import load_samples
from sbanet.data.splits import PUBLISHED_SIZES, check_split_size


def test_published_sizes_are_the_papers():
    assert PUBLISHED_SIZES == {
        "rrsisd": {"train": 12181, "val": 1740, "test": 3481},
        "refsegrs": {"train": 2172, "val": 431, "test": 1817},
    }


def test_a_partial_download_is_refused_unless_opted_out(tmp_path, monkeypatch):
    _write_refsegrs(tmp_path)  # train lists 3 samples, the files of one are missing
    monkeypatch.setitem(PUBLISHED_SIZES["refsegrs"], "train", 3)  # as if these were the published 3
    with pytest.raises(ValueError, match=r"2 of the published 3 samples could be read.*check_size=false"):
        load_samples("refsegrs", tmp_path, "train")
    assert len(load_samples("refsegrs", tmp_path, "train", check_size=False)) == 2


def test_small_losses_and_other_datasets_only_warn(tmp_path, caplog):
    _write_refsegrs(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sbanet.data.splits"):
        check_split_size("refsegrs", tmp_path, "train", 2, published={"refsegrs": {"train": 3}}, max_missing=0.5)
        assert "2 of the published 3" in caplog.text and "the run goes on" in caplog.text
        caplog.clear()
        load_samples("refsegrs", tmp_path, "test")  # lists 2 samples, the published test split 1,817
        assert "lists 2 samples, the published split 1817: not the published dataset" in caplog.text
        caplog.clear()
        check_split_size("refsegrs", tmp_path, "test", 2, published={"refsegrs": {"test": 2}})
        assert not caplog.text  # complete and published: silent
