"""training.config_cli: flags from config dataclasses, a nested model config's included."""

from __future__ import annotations

import dataclasses

import pytest

from captioner.config import ModelConfig
from training.config_cli import config_from_settings, config_parser, config_settings
from training.scst import ScstConfig
from training.train import MODEL_FLAGS, TrainConfig


def test_model_flags_are_flat_and_land_in_the_nested_model_config():
    flags = ["--data", "corpus", "--embed-dim", "32", "--decoder", "soft_attention", "--tie-embeddings", "--lr", "0.01"]
    config = config_from_settings(TrainConfig, vars(config_parser(TrainConfig, None).parse_args(flags)))
    assert (config.model.embed_dim, config.model.decoder, config.model.tie_embeddings) == (32, "soft_attention", True)
    assert config.model.hidden_dim == ModelConfig().hidden_dim and config.model.concept_slots == 3
    assert (config.data, config.lr) == ("corpus", 0.01)


def test_settings_are_the_flags_and_rebuild_the_config():
    config = config_from_settings(TrainConfig, {"data": "corpus", "hidden_dim": 40, "epochs": 2})
    settings = config_settings(config)
    assert "model" not in settings and settings["hidden_dim"] == 40 and settings["epochs"] == 2
    own = {field.name for field in dataclasses.fields(TrainConfig)} - {"model"}
    assert set(settings) == own | set(MODEL_FLAGS)
    assert config_from_settings(TrainConfig, settings) == config


def test_a_config_without_nesting_maps_one_to_one():
    config = config_from_settings(ScstConfig, {"data": "corpus", "init": "x.safetensors", "samples": 7})
    assert config == ScstConfig(data="corpus", init="x.safetensors", samples=7)
    assert config_settings(config) == dataclasses.asdict(config)


def test_an_unknown_setting_is_named():
    with pytest.raises(TypeError, match="feature_dim"):
        config_from_settings(TrainConfig, {"data": "corpus", "feature_dim": 16})  # set by the encoder, not a flag
