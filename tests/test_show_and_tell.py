from __future__ import annotations

import torch
import torch.nn.functional as F

from training.cross_entropy import masked_cross_entropy


def test_forward_and_step_shapes(small_model):
    features = torch.randn(3, 16)
    captions = torch.randint(4, small_model.config.vocab_size, (3, 7))
    assert small_model(features, captions).shape == (3, 6, small_model.config.vocab_size)
    state = small_model.init_state(features)
    logits, (h, c) = small_model.step(torch.ones(3, dtype=torch.long), state)
    assert logits.shape == (3, small_model.config.vocab_size)
    assert h.shape == c.shape == (1, 3, small_model.config.hidden_dim)


def test_feature_map_is_pooled(small_model):
    feature_map = torch.randn(2, 16, 3, 3)
    captions = torch.randint(4, small_model.config.vocab_size, (2, 5))
    expected = small_model(feature_map.mean(dim=(2, 3)), captions)
    assert torch.allclose(small_model(feature_map, captions), expected, atol=1e-6)


def test_step_matches_teacher_forcing(small_model):
    features = torch.randn(2, 16)
    captions = torch.randint(4, small_model.config.vocab_size, (2, 5))
    forced = small_model(features, captions)
    state = small_model.init_state(features)
    for t in range(4):
        logits, state = small_model.step(captions[:, t], state)
        assert torch.allclose(logits, forced[:, t], atol=1e-5)


def test_masked_loss_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 10)
    targets = torch.tensor([[5, 6, 2, 0], [7, 2, 0, 0]])
    loss = masked_cross_entropy(logits, targets)
    changed = logits.clone()
    changed[targets == 0] = torch.randn_like(changed[targets == 0]) * 100
    assert torch.allclose(loss, masked_cross_entropy(changed, targets))
    keep = targets != 0
    assert torch.allclose(loss, F.cross_entropy(logits[keep], targets[keep]))
