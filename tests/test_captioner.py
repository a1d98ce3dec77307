"""The shipped checkpoint through the ``Captioner`` facade (real encoder, real weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from media_helpers import mentions_dog, write_clip, write_rotated_clip
from PIL import Image

from captioner import Captioner, MediaError
from captioner.checkpoint import save_checkpoint
from captioner.config import ModelConfig
from captioner.decoders.show_and_tell import ShowAndTellDecoder
from training.feature_cache import _ImageFolder


def test_shipped_checkpoint_sees_the_dog(shipped: Captioner, dog_photo):
    result = shipped.caption(dog_photo)
    assert mentions_dog(result.caption)
    assert result.finished
    assert [s.word for s in result.steps] == result.caption.split()


def test_phone_sized_jpeg_is_captioned_from_a_reduced_decode_like_training_sees_it(
    shipped: Captioner, dog_photo, tmp_path
):
    big = tmp_path / "phone.jpg"
    Image.open(dog_photo).resize((4000, 3000), Image.Resampling.BICUBIC).save(big, quality=92)
    assert mentions_dog(shipped.caption(big).caption)
    # training's feature extraction decodes the same reduced picture, so features match
    picture = _ImageFolder([big], shipped.checkpoint.encoder)[0]
    with torch.inference_mode():
        from_training = shipped.encoder(picture[None].contiguous(memory_format=torch.channels_last))
    assert torch.allclose(shipped.encode([big]), from_training, atol=1e-5)


def test_shipped_checkpoint_is_self_describing(shipped: Captioner):
    checkpoint = shipped.checkpoint
    assert checkpoint.encoder.name == "efficientnet_lite0"
    assert checkpoint.training["train_images"] == 6000
    assert checkpoint.metrics["test_greedy"]["BLEU-4"] >= 18


@pytest.mark.parametrize("beam_size", [1, 3])
def test_steps_carry_sorted_top_k(shipped: Captioner, dog_photo, beam_size):
    result = shipped.caption(dog_photo, beam_size=beam_size, top_k=4)
    for step in result.steps:
        probs = [p for _, p in step.alternatives]
        assert len(step.alternatives) == 4
        assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
        if beam_size == 1:
            assert step.alternatives[0] == (step.word, step.prob)


def test_inputs_as_path_pil_and_array_agree(shipped: Captioner, dog_photo):
    image = Image.open(dog_photo)
    by_path = shipped.caption(dog_photo).caption
    assert shipped.caption(image).caption == by_path
    assert shipped.caption(np.asarray(image)).caption == by_path


@pytest.mark.slow
def test_batch_matches_single(shipped: Captioner, mini_corpus, dog_photo):
    photos = sorted((mini_corpus / "images").glob("*.jpg"))[:3] + [dog_photo]
    batch = shipped.caption_batch(photos)
    assert [r.caption for r in batch] == [shipped.caption(p).caption for p in photos]
    assert shipped.caption_batch([]) == []


@pytest.mark.slow
def test_encode_runs_the_encoder_a_few_images_at_a_time(shipped: Captioner, mini_corpus):
    photos = sorted((mini_corpus / "images").glob("*.jpg"))[:6]
    batch = torch.stack([shipped.preprocess(p) for p in photos]).contiguous(memory_format=torch.channels_last)
    sizes = []
    hook = shipped.encoder.register_forward_hook(lambda module, inputs, output: sizes.append(len(inputs[0])))
    try:
        maps = shipped.encode(photos)
        in_pairs = shipped.encoder.encode_in_chunks(batch, 2)
    finally:
        hook.remove()
    assert sizes == [4, 2, 2, 2, 2]  # the CPU's default chunks of 4, then chunks of 2
    with torch.inference_mode():
        whole = shipped.encoder(batch)
    torch.testing.assert_close(maps, whole)
    torch.testing.assert_close(in_pairs, whole)
    with pytest.raises(ValueError, match="encode_chunk_size must be at least 1"):
        Captioner(shipped.checkpoint, shipped.encoder, encode_chunk_size=0)


def test_video_caption_averages_frames(shipped: Captioner, tmp_path, dog_photo):
    clip = write_clip(tmp_path / "dog.mp4", dog_photo)
    result = shipped.caption_video(clip, num_frames=4)
    assert mentions_dog(result.caption)
    assert len(result.frame_times) == 4 and result.frame_times == sorted(result.frame_times)


def test_video_segments_carry_small_thumbnails(shipped: Captioner, tmp_path, dog_photo):
    clip = write_clip(tmp_path / "big.mp4", dog_photo, frames=8, size=720)
    result = shipped.caption_video(clip, num_frames=8, segments=4)
    assert len(result.segments) == 4
    assert all(max(s.thumbnail.size) == 320 for s in result.segments)  # not the 720 px frames
    assert [s.start for s in result.segments] == sorted(s.start for s in result.segments)


def test_a_phone_clip_stored_sideways_is_captioned_and_shown_upright(shipped: Captioner, tmp_path, dog_photo):
    portrait = Image.open(dog_photo).convert("RGB").resize((192, 256))
    clip = write_rotated_clip(tmp_path / "phone.mov", portrait, 90, frames=8, codec="libx265")
    result = shipped.caption_video(clip, num_frames=4, segments=2)
    assert mentions_dog(result.caption)
    assert all(s.thumbnail.size == (192, 256) for s in result.segments)  # portrait, as the phone showed it


def test_bad_input_and_options(shipped: Captioner, tmp_path):
    (tmp_path / "notes.jpg").write_text("not a photo")
    with pytest.raises(MediaError, match="not an image"):
        shipped.caption(tmp_path / "notes.jpg")
    with pytest.raises(ValueError, match="top_k"):
        shipped.caption(np.zeros((32, 32, 3), dtype=np.uint8), top_k=0)
    assert shipped.caption(np.zeros((32, 32, 3), dtype=np.uint8), max_length=3).steps.__len__() <= 3


def test_the_shipped_decoder_reads_and_copies_the_encoders_concepts(shipped: Captioner, mini_corpus):
    """The encoder's ImageNet head says cat for Chelsea; a dog it finds is copied into the caption."""
    chelsea = Path(__file__).resolve().parent.parent / "demo" / "chelsea.jpg"
    result = shipped.caption(chelsea, beam_size=1)
    assert result.concepts[0].word == "cat" and result.concepts[0].in_slot
    assert "→ cat" in result.concepts[0].describe()
    result = shipped.caption(mini_corpus / "images" / "282116218_7fd7583d6e.jpg", beam_size=1)
    assert any(step.concept == "dog" and step.word == "dog" for step in result.steps), result.caption
    assert "<concept" not in result.caption


def test_a_caption_reads_the_imagenet_head_once(shipped: Captioner, monkeypatch):
    """The concepts shown beside a caption are those it was decoded from, read once."""
    chelsea = Path(__file__).resolve().parent.parent / "demo" / "chelsea.jpg"
    decoder_class = type(shipped.checkpoint.model)
    read, calls = decoder_class.class_probabilities, []

    def counted(decoder, features: torch.Tensor) -> torch.Tensor:
        calls.append(len(features))
        return read(decoder, features)

    monkeypatch.setattr(decoder_class, "class_probabilities", counted)
    result = shipped.caption(chelsea, beam_size=1, require_concepts=0)
    assert calls == [1] and result.concepts[0].word == "cat"


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_confident_concept_is_named_when_required(shipped: Captioner, beam_size):
    """The shipped decoder alone has a boy run on the beach; required, the cheetah the head is sure
    of (0.92) is named, and its word is marked as the concept's."""
    cheetah = Path(__file__).resolve().parent.parent / "demo" / "outside_flickr8k" / "cheetah_running.jpg"
    free = shipped.caption(cheetah, beam_size=beam_size, require_concepts=0)
    named = shipped.caption(cheetah, beam_size=beam_size, require_concepts=0.7)
    assert "cheetah" not in free.caption.split()
    assert "cheetah" in named.caption.split(), named.caption
    assert [step.concept for step in named.steps if step.word == "cheetah"] == ["cheetah"]
    assert named.finished
    unsure = shipped.caption(cheetah, beam_size=beam_size, require_concepts=0.99)  # nothing that probable
    assert unsure.caption == free.caption


def test_a_clips_concepts_come_from_its_frames_and_are_named(shipped: Captioner, tmp_path):
    """A clip panning over Chelsea: the head finds the cat in the frames' mean; the decoder alone
    does not say it, the shipped default (concepts required from 0.8) does."""
    chelsea = Path(__file__).resolve().parent.parent / "demo" / "chelsea.jpg"
    clip = write_clip(tmp_path / "chelsea.mp4", chelsea, size=224)
    free = shipped.caption_video(clip, num_frames=4, require_concepts=0)
    named = shipped.caption_video(clip, num_frames=4)
    assert free.concepts[0].word == "cat" and free.concepts[0].prob >= 0.8
    assert "cat" not in free.caption.split()
    assert "cat" in named.caption.split() and "cat" in [step.concept for step in named.steps]


def test_required_concepts_are_checked(shipped: Captioner, small_vocab, tmp_path):
    photo = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="require_concepts must be"):
        shipped.caption(photo, require_concepts=1.5)
    with pytest.raises(ValueError, match="not with sampling"):
        shipped.caption(photo, require_concepts=0.5, sample=True)
    config = ModelConfig(feature_dim=1280, vocab_size=len(small_vocab), embed_dim=12, hidden_dim=20)
    no_concepts = save_checkpoint(
        tmp_path / "m.safetensors", ShowAndTellDecoder(config), small_vocab, shipped.checkpoint.encoder
    )
    with pytest.raises(ValueError, match="reads concepts"):
        Captioner.load(no_concepts, trace_encoder=False).caption(photo, require_concepts=0.5)
