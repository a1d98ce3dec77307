"""The recipes as one command each: every stage's command line, the chain, resuming."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest
from training_helpers import ROOT

from training import recipe


class _Parsed(Exception):
    """Raised in place of running a script, once its parser has accepted the arguments."""


@pytest.fixture(params=sorted(recipe.RECIPES))
def plan(request, tmp_path):
    return recipe.stages("data/flickr8k", tmp_path / "ship", "feats", threads=2, recipe=request.param)


def test_every_stage_command_line_is_accepted_by_its_script(plan, tmp_path, monkeypatch):
    (tmp_path / "ship").mkdir()
    for report in ("test.json", "test_greedy.json"):  # export's parser reads the evaluation reports
        (tmp_path / "ship" / report).write_text("{}")
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(parse(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for stage in plan:
        with pytest.raises(_Parsed):  # argparse exits (SystemExit) on a flag the script does not know
            importlib.import_module(f"training.{stage.script}").main(list(stage.args))


def test_each_stage_starts_from_what_an_earlier_stage_wrote(plan, tmp_path):
    written = set()
    for stage in plan:
        args = list(stage.args)
        for flag in ("--init", "--checkpoint"):
            if flag in args:
                assert args[args.index(flag) + 1] in written, (stage.name, flag)
        if "--run-dir" in args:
            written.add(str(tmp_path / "ship" / args[args.index("--run-dir") + 1].split("/")[-1] / "best.safetensors"))
        if "--out" in args and stage.script != "extract_features":
            written.add(args[args.index("--out") + 1])
    assert [stage.name for stage in plan][:2] == ["features", "xe"] and plan[-1].script == "export"
    assert str(tmp_path / "ship" / "captioner.safetensors") in written


def test_dry_run_prints_every_command_and_runs_nothing(tmp_path, capsys):
    assert recipe.main(["--data", "data/flickr8k", "--root", str(tmp_path / "ship"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("python -m training.") == 17 and "# 17/17 export" in out
    assert "python -m training.train --data data/flickr8k --features runs/features --run-dir" in out
    assert (
        f"--init {tmp_path}/ship/scst_top/best.safetensors --decoder concept_attention" in out
    )  # tuned, then converted
    assert not (tmp_path / "ship").exists()
    with pytest.raises(SystemExit):
        recipe.main(["--data", "x", "--until", "nothing", "--dry-run"])


def test_a_named_recipe_has_its_own_root_and_stages(capsys):
    assert recipe.main(["--data", "data/flickr8k", "--recipe", "concepts_from_xe", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--run-dir runs/concepts_from_xe/xe --decoder concept_attention" in out
    assert "runs/ship" not in out and "training.fit_copy --checkpoint runs/concepts_from_xe/scst_top/" in out
    assert recipe.main(["--data", "data/flickr8k", "--recipe", "concepts_then_top", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--run-dir runs/concepts_then_top/concepts --init runs/concepts_then_top/scst_ema/" in out
    with pytest.raises(ValueError, match="the recipes are shipped, concepts_then_top, concepts_from_xe"):
        recipe.stages("data", Path("runs"), "feats", 0, recipe="nothing")


@pytest.mark.slow
def test_the_first_stage_runs_on_the_fixture_and_is_then_skipped(tmp_path, mini_corpus, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the stages run as ``python -m training.<script>``
    common = ["--data", str(mini_corpus), "--root", str(tmp_path / "ship"), "--features", str(tmp_path / "features")]
    assert recipe.main([*common, "--until", "features", "--threads", "1"]) == 0
    assert (tmp_path / "ship" / "done" / "features").is_file()
    assert (tmp_path / "features" / "efficientnet_lite0" / "features.npy").is_file()
    capsys.readouterr()
    assert recipe.main([*common, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# 1/17 features (done)" in out and "# 2/17 xe\n" in out
