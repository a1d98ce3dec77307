"""Self-describing checkpoints: one safetensors file holding weights plus JSON metadata.

Metadata keys: ``format`` (version), ``config`` (:class:`ModelConfig`), ``vocab`` (token
list), ``encoder`` (:class:`EncoderSpec`: name, weights tag, preprocessing), ``training``,
``metrics``, ``decoding`` (defaults such as the calibrated softmax temperature),
``encoder_tuned_stages`` and, for decoders that read concepts, ``concepts`` (the concept table:
words, plurals, each ImageNet class's word). Loading runs no code (safetensors never unpickles). The encoder is
not stored; it is rebuilt from its spec. When its last stages were fine-tuned with the
decoder, their weights are stored as ``encoder.<name>`` tensors and replace the rebuilt ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from captioner.checkpoint_metadata import FORMAT, CheckpointError, existing, read_metadata, unreadable
from captioner.concepts import ConceptTable
from captioner.config import ModelConfig
from captioner.decoders import Decoder, build_decoder, decoder_class
from captioner.encoders import EncoderSpec, ImageEncoder, build_encoder
from captioner.skip_init import SkippedInit
from captioner.vocab import Vocabulary

__all__ = ["CheckpointError", "Checkpoint", "read_metadata", "save_checkpoint", "load_checkpoint"]

_ENCODER_PREFIX = "encoder."


@dataclass
class Checkpoint:
    """Everything a checkpoint holds, with the model rebuilt and its weights loaded."""

    config: ModelConfig
    vocab: Vocabulary
    encoder: EncoderSpec
    model: Decoder  # the one config.decoder names (see captioner.decoders)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    decoding: dict[str, Any] = field(default_factory=dict)
    encoder_weights: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    encoder_tuned_stages: int = 0  # the encoder's last stages whose weights ``encoder_weights`` holds
    concepts: ConceptTable | None = None  # the concept table of a decoder that reads concepts

    def save(self, path: str | Path) -> Path:
        """Write this checkpoint (e.g. one made with ``dataclasses.replace`` for new metadata)."""
        return save_checkpoint(
            path,
            self.model,
            self.vocab,
            self.encoder,
            training=self.training,
            metrics=self.metrics,
            decoding=self.decoding,
            encoder_weights=self.encoder_weights,
            encoder_tuned_stages=self.encoder_tuned_stages,
            concepts=self.concepts,
        )

    def build_encoder(self, *, head_kept: bool | None = None) -> ImageEncoder:
        """The encoder this checkpoint was trained with, its fine-tuned weights (if any) in place;
        a concept decoder's tuned encoder keeps its ImageNet head (tuned keeping its probabilities).
        ``head_kept``: keep the head (True) or drop it (False) whatever the decoder; None: as above.

        Raises:
            CheckpointError: the fine-tuned weights do not fit the encoder the spec names.
        """
        encoder = build_encoder(self.encoder.name)
        if self.encoder_weights:
            kept = self.model.reads_concepts if head_kept is None else head_kept
            try:
                encoder.load_tuned_weights(self.encoder_weights, head_kept=kept)
            except ValueError as error:
                raise CheckpointError(str(error)) from error
        return encoder

    def check_compatible(self, *, encoder: EncoderSpec | None = None, vocab: Vocabulary | None = None) -> None:
        """Raise :class:`CheckpointError` unless trained with this encoder and vocabulary."""
        if encoder is not None and encoder != self.encoder:
            raise CheckpointError(
                f"the checkpoint was trained on {self.encoder.name} features "
                f"({self.encoder.image_size}px, {self.encoder.weights}) but the encoder given is "
                f"{encoder.name} ({encoder.image_size}px, {encoder.weights}); train a new "
                "checkpoint or use the matching encoder"
            )
        if vocab is not None and vocab != self.vocab:
            raise CheckpointError(
                f"the checkpoint's vocabulary ({len(self.vocab)} tokens) differs from the one "
                f"given ({len(vocab)} tokens); rebuild features/vocab or start training afresh"
            )


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    vocab: Vocabulary,
    encoder: EncoderSpec,
    *,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    decoding: dict[str, Any] | None = None,
    encoder_weights: dict[str, torch.Tensor] | None = None,
    encoder_tuned_stages: int = 0,
    concepts: ConceptTable | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write atomically (temp file + rename): a crash mid-save never leaves a broken file.

    ``encoder_weights``: the fine-tuned weights of the encoder's last ``encoder_tuned_stages``
    stages, under the encoder's own names (:meth:`EncoderTop.encoder_weights`)."""
    path = Path(path)
    if len(vocab) != model.config.vocab_size:
        raise ValueError(f"vocabulary has {len(vocab)} tokens, model expects {model.config.vocab_size}")
    if bool(encoder_weights) != bool(encoder_tuned_stages):
        raise ValueError("fine-tuned encoder weights and their number of stages go together")
    state = {**model.state_dict(), **{_ENCODER_PREFIX + k: v for k, v in (encoder_weights or {}).items()}}
    tensors = _unshared_tensors(state, dtype)
    metadata = {
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "vocab": json.dumps(vocab.tokens),
        "encoder": json.dumps(encoder.to_dict()),
        "training": json.dumps(training or {}),
        "metrics": json.dumps(metrics or {}),
        "decoding": json.dumps(decoding or {}),
        "encoder_tuned_stages": json.dumps(encoder_tuned_stages),
        **({"concepts": json.dumps(concepts.to_dict())} if concepts is not None else {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def _unshared_tensors(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The state on the CPU in ``dtype``, each tensor in memory of its own: safetensors refuses
    tensors that share memory, as tied weights (one tensor under two names) do. Only those
    are copied a second time; a dtype change already gives every tensor its own memory."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, value in state.items():
        tensor = value.detach().to("cpu", dtype if value.is_floating_point() else value.dtype).contiguous()
        if tensor.untyped_storage().data_ptr() in storages:
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    return tensors


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` (no code is executed)."""
    path = existing(path)
    meta = read_metadata(path)
    try:
        config = ModelConfig.from_dict(meta["config"])
        decoder_class(config.decoder)  # a name this version knows
        vocab = Vocabulary(meta["vocab"])
        encoder = EncoderSpec.from_dict(meta["encoder"])
        concepts = ConceptTable.from_dict(meta["concepts"]) if "concepts" in meta else None
        if decoder_class(config.decoder).reads_concepts and concepts is None:
            raise ValueError(f"a {config.decoder} decoder needs the concept table, which the file lacks")
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path.name}: incomplete or invalid checkpoint metadata ({error})") from error
    if len(vocab) != config.vocab_size:
        raise CheckpointError(
            f"{path.name}: vocabulary has {len(vocab)} tokens but the config says {config.vocab_size}"
        )
    shapes = _stored_shapes(path)
    encoder_shapes = {k for k in shapes if k.startswith(_ENCODER_PREFIX)}
    tuned_stages = meta.get("encoder_tuned_stages", 0)
    if bool(encoder_shapes) != bool(tuned_stages) or not isinstance(tuned_stages, int):
        raise CheckpointError(f"{path.name}: its fine-tuned encoder weights and encoder_tuned_stages disagree")
    _check_shapes(path, config, {k: v for k, v in shapes.items() if k not in encoder_shapes})
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as error:
        raise unreadable(path, error) from error
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(
            f"{path.name}: weights {broken[:3]} hold NaN or infinite values (a diverged training run, "
            "or a damaged file); use an earlier checkpoint"
        )
    encoder_weights = {k.removeprefix(_ENCODER_PREFIX): v for k, v in tensors.items() if k.startswith(_ENCODER_PREFIX)}
    tensors = {k: v for k, v in tensors.items() if not k.startswith(_ENCODER_PREFIX)}
    with SkippedInit():  # every weight is loaded next (strictly)
        model = build_decoder(config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    if concepts is not None and model.reads_concepts:  # a copy is read back as the word it wrote
        model.read_copies_as_words(concepts, vocab)
    model.to(device).eval()
    return Checkpoint(
        config,
        vocab,
        encoder,
        model,
        meta.get("training", {}),
        meta.get("metrics", {}),
        meta.get("decoding", {}),
        {k: v.float() for k, v in encoder_weights.items()},
        tuned_stages,
        concepts,
    )


def _stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each stored tensor's shape, read from the file's header (no weights are loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise unreadable(path, error) from error


def _check_shapes(path: Path, config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a config that does not fit the stored tensors, before the model is built: its
    shapes come from a model built on the meta device (no memory, no time, whatever the sizes)."""
    try:
        with torch.device("meta"), SkippedInit():
            expected = {k: tuple(v.shape) for k, v in build_decoder(config).state_dict().items()}
    except (RuntimeError, ValueError, TypeError, OverflowError) as error:
        raise CheckpointError(
            f"{path.name}: its config cannot describe a model ({error}); the file was edited"
        ) from error
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = [f"{k} {shapes[k]} != {expected[k]}" for k in expected if k in shapes and shapes[k] != expected[k]]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path.name}: weights do not match its config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}); the file was made by a "
            "different model version or was edited"
        )
