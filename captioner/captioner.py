"""The ``Captioner`` facade: image/video in, caption with per-word top-k out.

Used by the app, the CLI, evaluation and the tests; it owns the encoder, the decoder, the
vocabulary and the preprocessing, all rebuilt from one checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from captioner.checkpoint import Checkpoint, load_checkpoint
from captioner.checkpoint_metadata import default_checkpoint_path
from captioner.concepts import Concept, ConceptReader, ImageConceptWords
from captioner.decoders.concept_attention.read import with_read_concepts
from captioner.decoding import Decoded, beam_search, constrained_beam_search, greedy_decode, sample_decode
from captioner.encoders import ImageEncoder, ImagePreprocessor, default_chunk_size
from captioner.media import ImageSource, read_video_frames
from captioner.options import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_TOP_K,
    check_decoding_options,
    check_frame_count,
    stored_decoding,
)
from captioner.vocab import END

__all__ = [
    "Captioner",
    "Concept",
    "CaptionResult",
    "WordStep",
    "VideoCaptionResult",
    "VideoSegment",
    "default_checkpoint_path",
]


@dataclass(frozen=True)
class WordStep:
    """A generated word, its probability, and the top-k words the model weighed."""

    word: str
    prob: float
    alternatives: list[tuple[str, float]]
    attention: list[float] | None = None  # weights over the encoder's H x W locations, row-major
    concept: str | None = None  # the concept word it was copied from (see CaptionResult.concepts)


@dataclass(frozen=True)
class CaptionResult:
    """A caption and its per-word steps (``<end>`` not included among the words)."""

    caption: str
    steps: list[WordStep]
    log_prob: float
    finished: bool
    attention_grid: tuple[int, int] | None = None  # (H, W) of each step's attention, if the model attends
    concepts: list[Concept] = field(default_factory=list)  # the image's concept words (concept decoders)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VideoSegment:
    """A stretch of a clip (seconds), its middle frame, and the caption of its frames."""

    start: float
    end: float
    thumbnail: Image.Image = field(repr=False, compare=False)
    result: CaptionResult


@dataclass(frozen=True)
class VideoCaptionResult(CaptionResult):
    """A clip's caption (mean of all sampled frames' features), frame times and segments."""

    frame_times: list[float] = field(default_factory=list)
    segments: list[VideoSegment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        base = CaptionResult(
            self.caption, self.steps, self.log_prob, self.finished, self.attention_grid, self.concepts
        ).to_dict()
        segments = [{"start": s.start, "end": s.end, "caption": s.result.caption} for s in self.segments]
        return {**base, "frame_times": self.frame_times, "segments": segments}


def _names_all(decoded: Decoded, required: Iterable[frozenset[int]]) -> bool:
    """Whether the caption holds a token of every required set."""
    tokens = set(decoded.token_ids)
    return all(not tokens.isdisjoint(names) for names in required)


def _thumbnail(image: Image.Image, size: int = 320) -> Image.Image:
    """A small copy for timelines: results stay light however large the clip's frames are."""
    small = image.copy()
    small.thumbnail((size, size))
    return small


class Captioner:
    """Encoder + glue + LSTM decoder with its vocabulary, loaded from one checkpoint."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        encoder: ImageEncoder,
        *,
        decoder_precision: str = "fp32",
        native_decoder: bool = True,
        encode_chunk_size: int | None = None,
        trace_encoder: bool = True,
    ) -> None:
        """``native_decoder``: the fused fp16 attention decoder runs its C++ kernels where they
        build (False: its TorchScript ones; see :mod:`captioner.decoders.soft_attention.native`).
        ``encode_chunk_size``: images per encoder forward in :meth:`encode` (None: a few on the
        CPU, all on an accelerator; see :func:`~captioner.encoders.default_chunk_size`).
        ``trace_encoder``: trace the encoder now (see :meth:`trace_encoder`; False: later or never)."""
        if encode_chunk_size is not None and encode_chunk_size < 1:
            raise ValueError(f"encode_chunk_size must be at least 1, not {encode_chunk_size}")
        checkpoint.check_compatible(encoder=encoder.spec)
        if encoder.feature_dim != checkpoint.config.feature_dim:
            raise ValueError(
                f"encoder gives {encoder.feature_dim} channels, checkpoint expects {checkpoint.config.feature_dim}"
            )
        self.checkpoint = checkpoint
        self.decoder_precision = decoder_precision
        self.model = checkpoint.model.eval().for_inference(decoder_precision, native=native_decoder)
        self.vocab = checkpoint.vocab
        self.encoder = encoder.to(memory_format=torch.channels_last)
        if trace_encoder:
            self.trace_encoder()
        # images per forward in encode (None: the whole batch)
        self.encode_chunk_size = encode_chunk_size or default_chunk_size(self.device)
        self.preprocess = ImagePreprocessor(encoder.spec)
        self.transform = self.preprocess.transform  # decoded image -> tensor (the benchmarks time it alone)

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        device: str = "cpu",
        decoder_precision: str | None = None,
        trace_encoder: bool = True,
    ) -> Captioner:
        """Load a checkpoint (None: the shipped one) and rebuild its encoder.

        ``decoder_precision`` (see :mod:`captioner.precision`): default ``fp16`` on the CPU,
        which gives the same captions as ``fp32`` at about twice the decoding speed.
        ``trace_encoder``: see :class:`Captioner` (False for a few images).
        """
        checkpoint = load_checkpoint(path or default_checkpoint_path(), device=device)
        encoder = checkpoint.build_encoder().to(device)
        precision = decoder_precision or ("fp16" if torch.device(device).type == "cpu" else "fp32")
        return cls(checkpoint, encoder, decoder_precision=precision, trace_encoder=trace_encoder)

    def trace_encoder(self) -> None:
        """Trace the encoder (:meth:`ImageEncoder.trace_for_inference`): the same maps with less
        overhead per image, for a process that captions many; tracing and the trace's first calls
        cost about what a few hundred images save. Safe while other threads caption."""
        self.encoder.trace_for_inference()

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    # -- encoding -------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """Preprocess and encode images into feature maps (B, C, H, W)."""
        batch = self.preprocess.batch(images)  # channels-last, as the encoder wants it
        return self.encoder.encode_in_chunks(batch.to(self.device), self.encode_chunk_size)

    # -- captioning -----------------------------------------------------------
    def caption(self, image: ImageSource, **options: Any) -> CaptionResult:
        """Caption one image (PIL image, array, bytes or path). Options: see :meth:`caption_features`."""
        return self.caption_batch([image], **options)[0]

    def caption_batch(self, images: Sequence[ImageSource], **options: Any) -> list[CaptionResult]:
        """Caption several images, encoded as one batch."""
        if not images:
            return []
        return self.caption_features(self.encode(images), **options)

    def caption_video(
        self,
        path: str | Path,
        *,
        num_frames: int = 8,
        segments: int = 0,
        max_frames: int = 3000,
        **options: Any,
    ) -> VideoCaptionResult:
        """Caption a clip from ``num_frames`` evenly spaced frames, encoded as one batch.

        The clip's caption decodes the mean of all frame features. With ``segments`` > 0
        the sampled frames are also split into that many consecutive groups, each
        captioned from the mean of its own frames (a timeline of captions).
        """
        check_frame_count(num_frames)
        frames = read_video_frames(path, num_frames=num_frames, max_frames=max_frames)
        features = self.encode([frame.image for frame in frames])  # (N, C, H, W)
        sections = min(segments, len(frames))
        groups = [g for g in np.array_split(np.arange(len(frames)), sections) if len(g)] if sections > 0 else []
        pooled = torch.cat(
            [features.mean(dim=0, keepdim=True), *(features[g].mean(dim=0, keepdim=True) for g in groups)]
        )
        whole, *parts = self.caption_features(pooled, **options)
        times = [frame.time for frame in frames]
        ends = [times[g[-1] + 1] if g[-1] + 1 < len(times) else times[-1] for g in groups]
        timeline = [
            VideoSegment(times[g[0]], end, _thumbnail(frames[g[len(g) // 2]].image), part)
            for g, end, part in zip(groups, ends, parts)
        ]
        fields = {f.name: getattr(whole, f.name) for f in dataclasses.fields(CaptionResult)}
        return VideoCaptionResult(**fields, frame_times=times, segments=timeline)

    @torch.inference_mode()
    def caption_features(
        self,
        features: torch.Tensor,
        *,
        beam_size: int | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        top_k: int = DEFAULT_TOP_K,
        length_penalty: float | None = None,
        no_repeat_ngram: int | None = None,
        temperature: float | None = None,
        sample: bool = False,
        top_p: float = 1.0,
        seed: int | None = None,
        require_concepts: float | None = None,
    ) -> list[CaptionResult]:
        """Decode encoder features: greedy when ``beam_size`` is 1, beam search otherwise
        (``length_penalty``, ``no_repeat_ngram``: see :func:`~captioner.decoding.beam_search`),
        or, with ``sample=True``, sampling at ``temperature`` from the ``top_p`` nucleus
        (``seed`` makes it repeatable). ``require_concepts`` p > 0 (concept decoders): a caption
        that leaves out a slot concept of probability p or more is searched again by constrained
        beam search (:func:`~captioner.decoding.constrained_beam_search`, ``beam_size`` beams per
        set of concepts named), so that it names every such concept. Settings left at None take the
        checkpoint's defaults (:attr:`default_decoding`: the decoding chosen on ``val`` and the
        calibrated temperature, which changes the shown probabilities, not greedy words)."""
        defaults = self.default_decoding
        beam_size = defaults["beam_size"] if beam_size is None else beam_size
        length_penalty = defaults["length_penalty"] if length_penalty is None else length_penalty
        no_repeat_ngram = defaults["no_repeat_ngram"] if no_repeat_ngram is None else no_repeat_ngram
        temperature = defaults["temperature"] if temperature is None else temperature
        require = defaults["require_concepts"] if require_concepts is None else require_concepts
        check_decoding_options(
            beam_size=beam_size,
            top_k=top_k,
            max_length=max_length,
            length_penalty=length_penalty,
            no_repeat_ngram=no_repeat_ngram,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            require_concepts=require,
            vocab_size=len(self.vocab),
        )
        if require_concepts and not self.checkpoint.model.reads_concepts:
            raise ValueError("require_concepts needs a checkpoint whose decoder reads concepts (concept_attention)")
        if require_concepts and sample:
            raise ValueError("require_concepts works with greedy decoding and beam search, not with sampling")
        ids = {
            "start_id": self.vocab.start_id,
            "end_id": self.vocab.end_id,
            "suppress_ids": self.vocab.never_generated_ids,
        }
        common = {"max_length": max_length, "top_k": top_k, "temperature": temperature, **ids}
        model, read = self.model, None
        if self.checkpoint.model.reads_concepts:  # read once: shown beside the captions, and decoded from
            concepts, read = ConceptReader(self.checkpoint.model, self.checkpoint.concepts).read(features)
            model = with_read_concepts(self.model, features, concepts)
        if sample:
            generator = torch.Generator(device=features.device)
            generator.manual_seed(seed if seed is not None else torch.seed())
            decoded = sample_decode(model, features, top_p=top_p, generator=generator, **common)
        elif beam_size == 1:
            decoded = greedy_decode(model, features, **common)
        else:
            decoded = beam_search(
                model,
                features,
                beam_size=beam_size,
                length_penalty=length_penalty,
                no_repeat_ngram=no_repeat_ngram,
                **common,
            )
        named = [c.naming_tokens(require, self.vocab) for c in read] if read and require and not sample else []
        search = {"beam_size": beam_size, "length_penalty": length_penalty, "no_repeat_ngram": no_repeat_ngram}
        searched_for = self._search_again(features, decoded, named, **search, **common)
        grid = tuple(features.shape[-2:]) if self.has_attention and features.dim() == 4 else None
        if read is None:
            return [self._result(d, grid) for d in decoded]
        return [
            self._result(d, grid, concepts, searched_for.get(i)) for i, (d, concepts) in enumerate(zip(decoded, read))
        ]

    def _search_again(
        self, features: torch.Tensor, decoded: list[Decoded], named: list[dict[str, frozenset[int]]], **options: Any
    ) -> dict[int, dict[str, frozenset[int]]]:
        """Replace each caption of ``decoded`` that leaves out one of its image's ``named`` concepts
        (with the tokens that name each) by constrained beam search's; returns, per image searched
        again, its required concepts."""
        searched_for = {i: n for i, (d, n) in enumerate(zip(decoded, named)) if not _names_all(d, n.values())}
        if searched_for:
            rows = list(searched_for)
            required = [list(n.values()) for n in searched_for.values()]
            for i, again in zip(rows, constrained_beam_search(self.model, features[rows], required, **options)):
                decoded[i] = again
        return searched_for

    @property
    def default_decoding(self) -> dict[str, Any]:
        """The checkpoint's decoding defaults (``training.tune_decoding --apply``, ``training.calibrate
        --apply``); greedy at temperature 1 where it stores none."""
        return stored_decoding(self.checkpoint.decoding)

    @property
    def has_attention(self) -> bool:
        """True when every word comes with attention weights over the image (a heatmap)."""
        return self.checkpoint.model.has_attention

    def _result(
        self,
        decoded: Decoded,
        grid: tuple[int, int] | None = None,
        concepts: ImageConceptWords | None = None,
        required: dict[str, frozenset[int]] | None = None,
    ) -> CaptionResult:
        """``required``: the concepts a caption searched again had to name, with their tokens (those
        words are marked as the concept's, copied or not)."""
        from_concept = {token: concept for concept, tokens in (required or {}).items() for token in tokens}

        def word(token_id: int) -> tuple[str, str | None]:
            """The token's word, and the concept word it came from (None: not from a concept)."""
            copied = concepts.copy_of(token_id) if concepts is not None else None
            return copied if copied is not None else (self.vocab.tokens[token_id], from_concept.get(token_id))

        kept = [(step, word(step.token_id)) for step in decoded.steps if step.token_id != self.vocab.end_id]
        steps = [
            WordStep(
                word=chosen,
                prob=step.prob,
                alternatives=[(word(i)[0], p) for i, p in zip(step.top_ids, step.top_probs)],
                attention=list(step.attention) if step.attention is not None else None,
                concept=concept,
            )
            for step, (chosen, concept) in kept
        ]
        assert all(s.word != END for s in steps)
        return CaptionResult(
            caption=" ".join(s.word for s in steps),
            steps=steps,
            log_prob=decoded.log_prob,
            finished=decoded.finished,
            attention_grid=grid,
            concepts=concepts.shown if concepts is not None else [],
        )
