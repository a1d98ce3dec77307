"""Fitting the <end> row: unfinished ends flip, the other decisions keep their side, nothing else moves."""

from __future__ import annotations

import torch
from training_helpers import tiny_train_config

from captioner.checkpoint import load_checkpoint
from training.fit_end import EndDecisions, end_row_loss
from training.fit_end import main as fit_end_main
from training.train import train


def test_the_fitted_row_stops_the_unfinished_ends_and_keeps_every_other_decision():
    torch.manual_seed(0)
    hidden = torch.randn(400, 8)
    hidden[:, 0] *= 0.1
    unfinished = torch.zeros(400, dtype=torch.bool)
    unfinished[:10] = True  # <end> wins there and should not; the states share a direction the row can learn
    hidden[:10, 0], hidden[:10, 1] = 3.0, 2.0
    best_other = torch.zeros(400)
    old_row = torch.zeros(8)
    old_row[1] = 1.0
    end_logit = hidden @ old_row + 0.5
    finished = ~unfinished & (end_logit > 0)
    decisions = EndDecisions(hidden, end_logit, best_other, unfinished, finished)
    weight, bias = old_row.clone().requires_grad_(True), torch.tensor(0.5, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(300):
        loss = end_row_loss(hidden @ weight + bias, decisions, weight=0.3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fitted = hidden @ weight + bias
    assert bool((fitted[:10] < best_other[:10]).all())
    clear = (end_logit - best_other).abs() > 0.25  # decisions that were not a coin toss
    clear[:10] = False
    kept = (fitted > best_other) == (end_logit > best_other)
    assert kept[clear].float().mean() > 0.97


def test_fit_end_changes_the_end_row_only(tmp_path, mini_corpus):
    features = tmp_path / "features"
    init = train(tiny_train_config(mini_corpus, tmp_path / "run", features, decoder="soft_attention", epochs=1))
    out = fit_end_main(
        ["--checkpoint", str(init), "--data", str(mini_corpus), "--features", str(features)]
        + ["--out", str(tmp_path / "end.safetensors"), "--steps", "20", "--weight", "0.3"]
    )
    before, after = load_checkpoint(init), load_checkpoint(out)
    end = before.vocab.end_id
    changed = {
        name
        for name, tensor in after.model.state_dict().items()
        if not torch.equal(tensor, before.model.state_dict()[name])
    }
    assert changed <= {"head.weight", "head.bias"}
    others = [i for i in range(len(before.vocab)) if i != end]
    assert torch.equal(after.model.head.weight[others], before.model.head.weight[others])
    record = after.training["fit_end"]
    assert record["weight"] == 0.3 and 0 <= record["unfinished_after"] <= record["unfinished_before"]
