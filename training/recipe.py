"""The shipped checkpoint's whole recipe (docs/training.md), every stage in order, in one command.

    python -m training.recipe --data ../shared/flickr8k --threads 2      # writes runs/ship/captioner.safetensors
    python -m training.recipe --data ../shared/flickr8k --dry-run        # print the stages' commands only

Each stage is one ``python -m training.<script>`` command, run as a process of its own: the
soft-attention model by cross-entropy and two self-critical stages, a third that also tunes the
encoder's last stage and head, its conversion to the concept decoder (the ImageNet head read
through that top), a self-critical stage with the copy term and a penalty on samples that stop
mid-phrase that tunes the top again (keeping its ImageNet probabilities), the copy tokens
fitted, the copy bias, the ``<end>`` row fitted so that no caption stops on a modifier ("... in
front of a white"), temperature, the probability from which a caption must name a concept and
then the beams chosen on ``val``, ``test`` read once (and under greedy, the app's other choice),
and the export. A stage that finishes leaves a marker in ``<root>/done/``; run the same command
again after an interruption and the finished stages are skipped while the training stages resume
from their ``last.pt``.
``--until STAGE`` stops after that stage. About 5 hours of compute on a 2-core CPU.

``--recipe concepts_then_top`` (root ``runs/concepts_then_top``) is the recipe of the checkpoint
shipped before: the frozen-encoder soft-attention model converted first, then copy, sentence and
encoder-top stages. ``--recipe concepts_from_xe`` trains the concept decoder from cross-entropy on
instead of converting the soft-attention model: its slots and copy tokens are learned with the
words, so no conversion and no separate copy fit before the encoder-top stage.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RECIPES", "Stage", "StagePaths", "main", "stages"]


@dataclass(frozen=True)
class Stage:
    """One step of the recipe: a ``training`` script and its arguments."""

    name: str
    script: str
    args: tuple[str, ...]

    def command(self) -> list[str]:
        return [sys.executable, "-m", f"training.{self.script}", *self.args]

    def shown(self) -> str:
        """The command as one would type it."""
        return shlex.join(["python", "-m", f"training.{self.script}", *self.args])


@dataclass(frozen=True)
class StagePaths:
    """Where a recipe's stages read and write: the data, every run's folder under ``root``, the
    feature cache, the torch threads."""

    data: str
    root: Path
    features: str
    threads: int

    def best(self, run: str) -> str:
        return str(self.root / run / "best.safetensors")

    def data_args(self) -> tuple[str, ...]:
        return ("--data", self.data)

    def common(self) -> tuple[str, ...]:
        return (*self.data_args(), "--features", self.features)

    def thread_args(self) -> tuple[str, ...]:
        return ("--threads", str(self.threads)) if self.threads else ()

    def trained(self, run: str, init: str | None, flags: str) -> tuple[str, ...]:
        """A training stage's arguments: its run folder, its start, its settings; resumable."""
        start = ("--init", self.best(init)) if init else ()
        return (
            *self.common(),
            "--run-dir",
            str(self.root / run),
            *start,
            *flags.split(),
            "--resume",
            *self.thread_args(),
        )

    def fit_copy(self, checkpoint: str, out: str) -> tuple[str, ...]:
        return ("--checkpoint", checkpoint, *self.common(), "--out", out, *self.thread_args())


SCST = "--baseline mean --lr 5e-5"
XE = "--image-dropout 0.2 --lr-decay 0.85 --epochs 8 --patience 3 --bucket-window 50"
# the references' cross-entropy beside the reward: sentences that finish
COMPLETE = "--xe-weight 0.03 --epochs 2 --patience 2 --select-metric unfinished"
# the encoder's last stage and head tuned with the decoder, its ImageNet probabilities kept
TOP_SETTINGS = "--tune-encoder-stages 1 --ema-decay 0.997"
TOP = f"{TOP_SETTINGS} --copy-weight 1 --xe-weight 0.03 --select-metric CIDEr_finished"


def shipped_stages(paths: StagePaths) -> list[Stage]:
    """The shipped checkpoint's recipe: soft attention by cross-entropy and self-critical training,
    its encoder top tuned, converted to the concept decoder, then a self-critical stage with the
    copy term and the penalty on unfinished samples, and the copy rows fitted gently."""
    p, ship = paths, str(paths.root / "ship.safetensors")
    # the soft-attention top was tuned before <end> joined the reward; the penalty stage finishes sentences
    soft_top = f"{SCST} {TOP_SETTINGS} --no-reward-end --epochs 10 --patience 3"
    penalty = "--copy-weight 1 --unfinished-penalty 1 --select-metric CIDEr --epochs 3 --patience 3"
    return [
        *_cross_entropy_then_self_critical(p, "soft_attention", SCST),
        _trunk(p),
        Stage("scst_top", "scst", p.trained("scst_top", "scst_ema", soft_top)),
        Stage(
            "concepts",
            "train",
            p.trained(
                "concepts",
                "scst_top",
                "--decoder concept_attention --image-dropout 0.2 --keep-imagenet-head --epochs 0",
            ),
        ),
        Stage("scst_penalty", "scst", p.trained("scst_penalty", "concepts", f"{SCST} {TOP_SETTINGS} {penalty}")),
        # one epoch at a third of the default rate: the rows learn to copy, the captions keep their scores
        Stage("fit_copy", "fit_copy", (*p.fit_copy(p.best("scst_penalty"), ship), "--epochs", "1", "--lr", "3e-3")),
        *_choose_test_export(p, ship),
    ]


def concepts_then_top_stages(paths: StagePaths) -> list[Stage]:
    """The recipe of the checkpoint shipped before: soft attention by cross-entropy and
    self-critical training, converted to the concept decoder, then copy, sentence and encoder-top
    stages."""
    p = paths
    return [
        *_cross_entropy_then_self_critical(p, "soft_attention", SCST),
        Stage(
            "concepts",
            "train",
            p.trained("concepts", "scst_ema", "--decoder concept_attention --image-dropout 0.2 --epochs 0"),
        ),
        Stage(
            "scst_copy", "scst", p.trained("scst_copy", "concepts", f"{SCST} --epochs 8 --patience 3 --copy-weight 1")
        ),
        Stage("fit_copy", "fit_copy", p.fit_copy(p.best("scst_copy"), p.best("fit_copy"))),
        Stage(
            "scst_end", "scst", p.trained("scst_end", "fit_copy", "--lr 1e-4 --epochs 4 --patience 4 --copy-weight 1")
        ),
        Stage("scst_xe", "scst", p.trained("scst_xe", "scst_end", f"{SCST} {COMPLETE} --copy-weight 1")),
        Stage("fit_copy_end", "fit_copy", p.fit_copy(p.best("scst_xe"), p.best("fit_copy_end"))),
        *_encoder_top_to_export(p, "fit_copy_end"),
    ]


def concepts_from_xe_stages(paths: StagePaths) -> list[Stage]:
    """The concept decoder trained with its slots and copy tokens from cross-entropy on (after DCC
    and NOC), then the shipped recipe's self-critical, sentence and encoder-top stages."""
    p, copy = paths, f"{SCST} --copy-weight 1"
    return [
        *_cross_entropy_then_self_critical(p, "concept_attention", copy),
        Stage("scst_xe", "scst", p.trained("scst_xe", "scst_ema", f"{copy} {COMPLETE}")),
        *_encoder_top_to_export(p, "scst_xe"),
    ]


def _cross_entropy_then_self_critical(p: StagePaths, decoder: str, scst: str) -> list[Stage]:
    """The features, ``decoder`` by cross-entropy, then self-critical training (``scst``: its
    settings) and a second self-critical stage keeping an average of the weights."""
    return [
        Stage("features", "extract_features", (*p.data_args(), "--out", p.features, *p.thread_args())),
        Stage("xe", "train", p.trained("xe", None, f"--decoder {decoder} {XE}")),
        Stage("scst_mean", "scst", p.trained("scst_mean", "xe", f"{scst} --epochs 22 --patience 3")),
        Stage(
            "scst_ema", "scst", p.trained("scst_ema", "scst_mean", f"{scst} --ema-decay 0.997 --epochs 14 --patience 4")
        ),
    ]


def _encoder_top_to_export(p: StagePaths, init: str) -> list[Stage]:
    """From run ``init``: the frozen trunk's maps (the encoder less its last stage and head), the
    encoder-top stage, the copy rows refitted through it, then the choices on ``val``, ``test``
    and the export."""
    ship = str(p.root / "ship.safetensors")
    return [
        _trunk(p),
        Stage("scst_top", "scst", p.trained("scst_top", init, f"{SCST} {TOP} --epochs 10 --patience 3")),
        Stage("fit_copy_top", "fit_copy", p.fit_copy(p.best("scst_top"), ship)),
        *_choose_test_export(p, ship),
    ]


def _trunk(p: StagePaths) -> Stage:
    """The frozen trunk's maps (the encoder less its last stage and head), which a stage that
    tunes the encoder's top reads."""
    return Stage(
        "trunk",
        "extract_features",
        (*p.data_args(), "--out", p.features, "--tune-encoder-stages", "1", *p.thread_args()),
    )


def _choose_test_export(p: StagePaths, ship: str) -> list[Stage]:
    """The copy bias, the ``<end>`` row, temperature and decoding chosen on ``val``, ``test`` read
    once, the export."""
    test, test_greedy = str(p.root / "test.json"), str(p.root / "test_greedy.json")
    on_test = ("--checkpoint", ship, *p.data_args(), "--split", "test")
    # concepts the head is sure of and a caption leaves out, searched for again from the probability
    # chosen on val under greedy decoding; then the beams, with that probability kept
    concepts = "--beams 1 --require-concepts 0 0.5 0.6 0.7 0.8 0.9 --apply"
    beams = "--beams 1 3 5 --length-penalties 1 1.5 2 --no-repeat-ngrams 0 3 --apply"
    finished = ("--fewest-unfinished", "--apply")
    return [
        Stage(
            "tune_concepts",
            "tune_concepts",
            ("--checkpoint", ship, *p.data_args(), "--biases", "0", "1", "2", *finished),
        ),
        # with the copy bias chosen: the <end> row fitted so that no caption stops on "a white"
        Stage("fit_end", "fit_end", ("--checkpoint", ship, *p.common(), "--out", ship, *p.thread_args())),
        Stage("calibrate", "calibrate", ("--checkpoint", ship, *p.common(), "--apply")),
        Stage(
            "tune_decoding", "tune_decoding", ("--checkpoint", ship, *p.common(), *concepts.split(), *p.thread_args())
        ),
        Stage("tune_beams", "tune_decoding", ("--checkpoint", ship, *p.common(), *beams.split(), *p.thread_args())),
        Stage("test", "evaluate", (*on_test, "--out", test, *p.thread_args())),
        # the app's other choice, reported beside the default
        Stage("test_greedy", "evaluate", (*on_test, "--beam", "1", "--out", test_greedy, *p.thread_args())),
        Stage(
            "export",
            "export",
            (
                "--checkpoint",
                ship,
                "--report",
                f"test_default={test}",
                "--report",
                f"test_greedy={test_greedy}",
                "--out",
                str(p.root / "captioner.safetensors"),
            ),
        ),  # fmt: skip
    ]


RECIPES: dict[str, Callable[[StagePaths], list[Stage]]] = {
    "shipped": shipped_stages,
    "concepts_then_top": concepts_then_top_stages,
    "concepts_from_xe": concepts_from_xe_stages,
}


def stages(data: str, root: Path, features: str, threads: int, recipe: str = "shipped") -> list[Stage]:
    """The named recipe's stages in order; each reads only the data and what earlier stages wrote."""
    if recipe not in RECIPES:
        raise ValueError(f"no recipe {recipe!r}; the recipes are {', '.join(RECIPES)}")
    return RECIPES[recipe](StagePaths(data, root, features, threads))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Flickr8k folder (images/ + Flickr8k_text/)")
    parser.add_argument("--recipe", default="shipped", choices=sorted(RECIPES), help="which recipe (default: shipped)")
    parser.add_argument("--root", type=Path, help="folder of every stage's run (default: runs/ship, runs/<recipe>)")
    parser.add_argument("--features", default="runs/features", help="feature cache root")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per stage (0: its default)")
    parser.add_argument("--until", help="stop after this stage")
    parser.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    args = parser.parse_args(argv)
    root = args.root or Path("runs") / ("ship" if args.recipe == "shipped" else args.recipe)
    plan = stages(args.data, root, args.features, args.threads, args.recipe)
    names = [stage.name for stage in plan]
    if args.until is not None and args.until not in names:
        parser.error(f"--until: no stage {args.until!r}; the stages are {', '.join(names)}")
    if args.until is not None:
        plan = plan[: names.index(args.until) + 1]
    done = root / "done"
    for number, stage in enumerate(plan, start=1):
        finished = (done / stage.name).is_file()
        print(f"# {number}/{len(names)} {stage.name}{' (done)' if finished else ''}\n{stage.shown()}", flush=True)
        if finished or args.dry_run:
            continue
        returncode = subprocess.run(stage.command()).returncode
        if returncode:
            print(f"stage {stage.name} failed (exit {returncode}); run the same command again to resume it")
            return returncode
        done.mkdir(parents=True, exist_ok=True)
        (done / stage.name).write_text(stage.shown() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
