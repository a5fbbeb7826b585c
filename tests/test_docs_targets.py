"""docs/training.md's targets are the paper's numbers: every row of its target table names the
line of ../shared/paper/sbanet-paper.txt that holds it, and each number must be on that line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sbanet.build import ABLATION_TABLES

PAPER = Path("../shared/paper/sbanet-paper.txt")
DOCS = Path("docs/training.md")
NUMBER = r" \| ([\d.]+)"
ROW = re.compile(r"^\| (I|II|III|IV|V|VI) \| ([^|]+) \| (\d+)" + NUMBER * 5 + r" \| (.+) \|$")


def target_rows() -> list[re.Match]:
    return [m for line in DOCS.read_text().splitlines() if (m := ROW.match(line))]


def test_every_target_number_is_on_the_cited_paper_line():
    if not PAPER.is_file():
        pytest.skip(f"{PAPER} (the paper's text, beside the project) is absent")
    paper = PAPER.read_text().splitlines()
    rows = target_rows()
    assert len(rows) == 31
    for row in rows:
        line = paper[int(row[3]) - 1].split()
        for number in row.groups()[3:8]:
            assert number in line, f"Table {row[1]} {row[2].strip()}: {number} is not on paper line {row[3]}"


def test_every_table_row_has_a_target_and_its_command():
    keys: dict[str, set[str]] = {}
    for row in target_rows():
        command = row[9]
        found = re.search(r"--table (\w+) --rows (\S+) ", command)
        assert found and found[1] == row[1], row[0]
        keys.setdefault(row[1], set()).add(found[2])
        assert "runs/" in command and f"/{found[2]}/best" in command and "train.evaluate" in command
    assert {t: set(rows) for t, rows in ABLATION_TABLES.items()} == keys
