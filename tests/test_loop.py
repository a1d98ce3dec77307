"""training.loop with a small objective plugged in: keep-best, early stop, resume, the start's epoch 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from training_helpers import read_log

from training.distributed import Distributed
from training.loop import Objective, train_epochs


class Scripted(Objective):
    """A real model, optimiser and schedule trained on seeded batches; validation scores come from
    ``scores`` in turn, so a test decides which epochs improve."""

    columns = ("train_loss",)

    def __init__(self, scores: list[float], *, validates_start: bool = False) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 1))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=0.5)
        self.clip, self.batch_count, self.validates_start = 1.0, 3, validates_start
        self.scores, self.saved, self.steps = list(scores), [], 0

    def batches(self, epoch: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(epoch)
        return [torch.randn(4, 3, generator=generator) for _ in range(self.batch_count)]

    def backward(self, batch: torch.Tensor) -> dict[str, float]:
        self.model.train()
        loss = (self.model(batch) - batch.sum(dim=1, keepdim=True)).square().mean()  # dropout draws from torch's RNG
        loss.backward()
        self.steps += 1
        return {"loss": loss.item() * len(batch), "rows": len(batch)}

    def epoch_columns(self, sums: dict[str, float]) -> dict[str, float]:
        return {"train_loss": sums["loss"] / sums["rows"]}

    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        return {"score": self.scores.pop(0)}, {"steps": float(self.steps)}

    def save_best(self, path: Path, scores: dict[str, float], *, epoch: int, seconds: float) -> None:
        self.saved.append((epoch, scores["score"]))
        save_file(self.model.state_dict(), path)

    def resume_state(self) -> dict:
        return {"steps": self.steps}

    def resume(self, state: dict, path: Path) -> None:
        self.steps = state["steps"]


class CountsUnfinished(Scripted):
    """Validation reports a count where fewer is better."""

    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        return {"unfinished": self.scores.pop(0)}, {}

    def save_best(self, path: Path, scores: dict[str, float], *, epoch: int, seconds: float) -> None:
        self.saved.append((epoch, scores["unfinished"]))
        save_file(self.model.state_dict(), path)


def _run(
    objective: Scripted,
    run: Path,
    *,
    epochs: int,
    patience: int = 10,
    resume: bool = False,
    select_metric: str = "score",
) -> Path:
    return train_epochs(
        objective,
        run_dir=run,
        epochs=epochs,
        patience=patience,
        select_metric=select_metric,
        resume=resume,
        settings={"epochs": epochs},
        job=Distributed.single(),
    )


def test_the_loop_keeps_each_better_epoch_and_stops_after_patience_epochs_without_one(tmp_path):
    objective = Scripted([1.0, 3.0, 2.0, 2.5, 9.0])
    best = _run(objective, tmp_path, epochs=5, patience=2)
    assert objective.saved == [(1, 1.0), (2, 3.0)]  # epochs 3 and 4 did not beat 3.0; epoch 5 never ran
    assert load_file(best).keys() == objective.model.state_dict().keys()
    rows = read_log(tmp_path)
    assert list(rows[0]) == ["epoch", "train_loss", "seconds", "val_score", "val_steps"]
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]
    assert [float(row["val_steps"]) for row in rows] == [3.0, 6.0, 9.0, 12.0]
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (state["epoch"], state["best_score"], state["stale"], state["steps"]) == (4, 3.0, 2, 12)
    assert state["scheduler"]["last_epoch"] == 4
    assert json.loads((tmp_path / "config.json").read_text()) == {"epochs": 5}
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_a_count_of_unfinished_captions_keeps_the_earliest_epoch_with_the_fewest(tmp_path):
    objective = CountsUnfinished([16.0, 8.0, 8.0, 0.0, 2.0])
    _run(objective, tmp_path, epochs=5, select_metric="unfinished")
    assert objective.saved == [(1, 16.0), (2, 8.0), (4, 0.0)]


class ScoresAndCounts(Scripted):
    """Validation reports a CIDEr and a count of unfinished captions."""

    def validate(self) -> tuple[dict[str, float], dict[str, float]]:
        cider, unfinished = self.scores.pop(0)
        return {"CIDEr": cider, "unfinished": unfinished}, {}

    def save_best(self, path: Path, scores: dict[str, float], *, epoch: int, seconds: float) -> None:
        self.saved.append((epoch, scores["CIDEr"]))
        save_file(self.model.state_dict(), path)


def test_a_finished_score_keeps_only_epochs_without_unfinished_captions(tmp_path):
    objective = ScoresAndCounts([(0.5, 0.0), (0.7, 2.0), (0.6, 0.0), (0.55, 0.0), (0.9, 1.0)])
    _run(objective, tmp_path, epochs=5, select_metric="CIDEr_finished")
    assert objective.saved == [(1, 0.5), (3, 0.6)]  # 0.7 and 0.9 left captions unfinished


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    scores = [1.0, 0.5]
    straight = Scripted(scores)
    _run(straight, tmp_path / "straight", epochs=2)
    _run(Scripted(scores[:1]), tmp_path / "resumed", epochs=1)
    torch.manual_seed(123)  # the resumed run takes torch's RNG from last.pt, not from here
    resumed = Scripted(scores[1:])
    _run(resumed, tmp_path / "resumed", epochs=2, resume=True)
    for name, weights in straight.model.state_dict().items():
        assert torch.equal(weights, resumed.model.state_dict()[name]), name
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"] == 0.05 / 4
    assert resumed.scheduler.state_dict() == straight.scheduler.state_dict()
    assert resumed.steps == straight.steps == 6
    assert resumed.saved == []  # epoch 2 fell short of epoch 1's score, which last.pt kept
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert (state["best_score"], state["stale"]) == (1.0, 1)
    plain = [{k: v for k, v in row.items() if k != "seconds"} for row in read_log(tmp_path / "straight")]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in read_log(tmp_path / "resumed")] == plain


def test_a_run_that_validates_its_start_logs_it_as_epoch_0_and_must_beat_it(tmp_path):
    objective = Scripted([5.0, 4.0, 6.0], validates_start=True)
    _run(objective, tmp_path, epochs=2)
    rows = read_log(tmp_path)
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert (float(rows[0]["train_loss"]), float(rows[0]["val_score"])) == (0.0, 5.0)
    assert objective.saved == [(2, 6.0)]


def test_a_run_that_never_beats_its_start_writes_no_best_checkpoint(tmp_path):
    objective = Scripted([5.0, 4.0], validates_start=True)
    best = _run(objective, tmp_path, epochs=1)
    assert not best.exists() and objective.saved == []
    assert torch.load(tmp_path / "last.pt", weights_only=True)["best_score"] == 5.0


@pytest.mark.parametrize("epochs", [0, 1])
def test_zero_or_finished_epochs_train_nothing(tmp_path, epochs):
    if epochs:
        _run(Scripted([1.0]), tmp_path, epochs=epochs)
    again = Scripted([])
    _run(again, tmp_path, epochs=epochs, resume=True)
    assert again.steps == 3 * epochs and again.saved == []
