from __future__ import annotations

import json

import pytest

from training.evaluate import main
from training.metrics import score_captions


def test_scores_reward_matching_captions():
    references = {"a": ["a dog runs on the grass", "a brown dog running"], "b": ["two people ride bikes"]}
    perfect = score_captions({"a": "a dog runs on the grass", "b": "two people ride bikes"}, references, use_java=False)
    wrong = score_captions({"a": "a cat sleeps", "b": "a red car"}, references, use_java=False)
    assert set(perfect) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"}
    assert perfect["BLEU-1"] > 90 and wrong["BLEU-1"] < 40
    assert perfect["CIDEr"] > wrong["CIDEr"]
    with pytest.raises(ValueError, match="same image ids"):
        score_captions({"a": "x"}, references, use_java=False)


@pytest.mark.slow
def test_evaluate_cli_on_the_fixture_test_split(tmp_path, mini_corpus, capsys):
    out = tmp_path / "metrics.json"
    report = main(["--data", str(mini_corpus), "--split", "test", "--out", str(out)])
    printed = capsys.readouterr().out
    assert report["images"] == 8 and json.loads(out.read_text())["metrics"] == report["metrics"]
    expected = {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"} | ({"METEOR"} if report["java"] else set())
    assert set(report["metrics"]) == expected
    assert 20 < report["metrics"]["BLEU-1"] <= 100
    assert "BLEU-4" in printed and "CIDEr" in printed
