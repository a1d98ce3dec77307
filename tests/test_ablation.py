"""training.ablation: evaluate reports on val and test -> one Markdown row each, and a chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from training.ablation import main, markdown_table, read_rows


def _report(folder: Path, split: str, name: str, bleu4: float, cider: float) -> None:
    metrics = {"BLEU-1": 60.0 + bleu4, "BLEU-4": bleu4, "METEOR": 19.5, "ROUGE-L": 46.25, "CIDEr": cider}
    (folder / split).mkdir(parents=True, exist_ok=True)
    (folder / split / f"{name}.json").write_text(json.dumps({"split": split, "metrics": metrics}))


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    _report(tmp_path, "val", "att_greedy", 19.04, 0.4712)
    _report(tmp_path, "test", "att_greedy", 20.22, 0.5122)
    _report(tmp_path, "val", "att_beam3", 21.0, 0.511)
    _report(tmp_path, "test", "att_beam3", 22.61, 0.5581)
    return tmp_path


def test_rows_pair_each_models_val_and_test_reports(reports: Path) -> None:
    rows = read_rows(reports, ["att"], ["greedy", "beam3"])
    assert [(r.decoding, r.val["CIDEr"], r.test["BLEU-4"]) for r in rows] == [
        ("greedy", 0.4712, 20.22),
        ("beam3", 0.511, 22.61),
    ]
    table = markdown_table(rows).splitlines()
    assert table[0].startswith("| model | decoding | val BLEU-4 | val CIDEr | test BLEU-1 |")
    assert table[2] == "| att | greedy | 19.0 | 0.471 | 80.2 | 20.2 | 19.5 | 46.2 | 0.512 |"
    assert table[3].endswith("| 22.6 | 19.5 | 46.2 | 0.558 |")


def test_a_missing_report_is_named(reports: Path) -> None:
    (reports / "test" / "att_beam3.json").unlink()
    with pytest.raises(FileNotFoundError, match="att_beam3.json"):
        read_rows(reports, ["att"], ["greedy", "beam3"])


def test_cli_prints_the_table_and_draws_the_chart(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = reports / "chart.png"
    table = main(["--dir", str(reports), "--names", "att", "--plot", str(chart)])
    assert table in capsys.readouterr().out
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 100
