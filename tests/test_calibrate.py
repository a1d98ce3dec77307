from __future__ import annotations

import torch

from training.calibrate import expected_calibration_error, fit_temperature


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    confidence = torch.full((1000,), 0.7)
    correct = torch.arange(1000) % 10 < 7  # exactly 70 % right
    assert expected_calibration_error(confidence, correct) < 1e-6
    assert abs(expected_calibration_error(torch.full((1000,), 0.99), correct) - 0.29) < 1e-4


def test_fitted_temperature_undoes_a_known_scaling():
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 20) * 2
    targets = torch.distributions.Categorical(logits=true_logits).sample()
    overconfident = true_logits * 3  # the same ranking, three times too sharp
    assert abs(fit_temperature(overconfident, targets) - 3.0) < 0.3
