"""The concept decoder: slots hold the image's concept words, empty slots are never generated,
and its fused fp16 form (reference's greedy and beam captions) on both kernel kinds."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from captioner.checkpoint import load_checkpoint, save_checkpoint
from captioner.concepts import ConceptTable, caption_words, slot_tokens
from captioner.config import ModelConfig
from captioner.decoders.concept_attention import ConceptAttentionDecoder, FusedConceptDecoder
from captioner.decoders.concept_attention.read import with_read_concepts
from captioner.decoding import beam_search, greedy_decode, sample_decode
from captioner.encoders import EncoderSpec
from captioner.vocab import Vocabulary

SLOTS = 2
CAT, TABBY = "cat", 281  # ImageNet class 281 is "tabby, tabby cat"


@pytest.fixture(scope="module")
def table() -> ConceptTable:
    return ConceptTable.load()


@pytest.fixture()
def vocab(small_vocab: Vocabulary) -> Vocabulary:
    return Vocabulary([*small_vocab.tokens, *slot_tokens(SLOTS)])


@pytest.fixture()
def concept_model(vocab: Vocabulary, table: ConceptTable) -> ConceptAttentionDecoder:
    """A small concept decoder (random fp16-representable weights) whose ImageNet head makes
    channel 0 of a 16-channel map vote for the tabby class."""
    torch.manual_seed(0)
    config = ModelConfig(
        feature_dim=16,
        vocab_size=len(vocab),
        embed_dim=12,
        hidden_dim=20,
        dropout=0.0,
        image_dropout=0.0,
        decoder="concept_attention",
        attention_dim=10,
        concept_words=len(table.words),
        concept_slots=SLOTS,
        concept_threshold=0.3,
    )
    model = ConceptAttentionDecoder(config)
    head = nn.Linear(16, 1000)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[TABBY, 0] = 20.0
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    model.set_concept_table(table.class_index(), head)
    model.read_copies_as_words(table, vocab)
    return model.eval()


def maps_with(cat: list[bool]) -> torch.Tensor:
    """(B, 16, 3, 3) maps; channel 0 is high (a confident tabby) where ``cat``."""
    maps = torch.randn(len(cat), 16, 3, 3) * 0.1
    maps[:, 0] = torch.tensor([1.0 if c else 0.0 for c in cat])[:, None, None]
    return maps


def test_a_confident_class_fills_the_first_slot_with_its_word(concept_model, table):
    concepts = concept_model.concepts(maps_with([True, False]))
    assert table.words[int(concepts.word_ids[0, 0])] == CAT and float(concepts.scores[0, 0]) > 0.9
    assert (concepts.word_ids[1] == -1).all()  # nothing near the threshold: every slot empty


def test_empty_slots_are_never_generated(concept_model, vocab):
    base = len(vocab) - 2 * SLOTS
    with torch.inference_mode():
        decoded = sample_decode(
            concept_model,
            maps_with([False] * 8),
            start_id=vocab.start_id,
            end_id=vocab.end_id,
            max_length=10,
            generator=torch.Generator().manual_seed(0),
        )
    assert all(token < base for d in decoded for token in d.token_ids)


def test_a_slot_token_becomes_the_images_concept_word(concept_model, vocab, table):
    base = len(vocab) - 2 * SLOTS
    slots = concept_model.concepts(maps_with([True])).word_ids[0].tolist()
    token_ids = [vocab.id_of("a"), base, vocab.id_of("sits"), base + SLOTS, vocab.end_id]
    words = caption_words(token_ids, vocab.tokens, vocab.end_id, slots, table)
    assert words == ["a", "cat", "sits", "cats"]


def test_a_copy_bias_raises_the_filled_slots_logits_only(concept_model, vocab):
    base = len(vocab) - 2 * SLOTS
    maps = maps_with([True])
    with torch.inference_mode():
        before, _ = concept_model.step(torch.tensor([1]), concept_model.init_state(maps))
        concept_model.config = dataclasses.replace(concept_model.config, copy_bias=2.5)
        after, _ = concept_model.step(torch.tensor([1]), concept_model.init_state(maps))
    assert torch.allclose(after[0, :base], before[0, :base])
    assert float(after[0, base]) == pytest.approx(float(before[0, base]) + 2.5)
    assert float(after[0, base + 1]) == float("-inf")  # slot 2 is empty: no bias makes it possible


def test_a_copy_is_read_back_as_the_word_it_wrote(concept_model, vocab):
    """After the copy of "cat" the decoder goes on as after the word "cat"; "cats", which the
    vocabulary lacks, and an empty slot's copy are read as the copy token itself."""
    base = len(vocab) - 2 * SLOTS
    with torch.inference_mode():
        _, after_a = concept_model.step(torch.tensor([vocab.id_of("a")]), concept_model.init_state(maps_with([True])))
        copied, _ = concept_model.step(torch.tensor([base]), after_a)
        written, _ = concept_model.step(torch.tensor([vocab.id_of("cat")]), after_a)
        plural, _ = concept_model.step(torch.tensor([base + SLOTS]), after_a)
    assert torch.equal(copied, written) and not torch.allclose(plural, written)
    reads = concept_model.token_reads(concept_model.concepts(maps_with([True, False])))
    assert int(reads[0, base]) == vocab.id_of("cat") and int(reads[0, base + SLOTS]) == base + SLOTS
    assert int(reads[1, base]) == base  # slot 1 of the second image is empty
    assert torch.equal(reads[:, :base], torch.arange(base).expand(2, -1))


@pytest.mark.parametrize("native", [True, False])
def test_the_compiled_greedy_loop_reads_copies_back_as_the_reference_does(concept_model, vocab, native):
    concept_model.config = dataclasses.replace(concept_model.config, copy_bias=6.0)  # it copies the cat
    fused = concept_model.for_inference("fp16", native=native)
    maps = maps_with([True, False, True])
    ids = {"start_id": vocab.start_id, "end_id": vocab.end_id, "max_length": 6}
    expected = greedy_decode(concept_model, maps, **ids)
    assert any(token >= len(vocab) - 2 * SLOTS for token in expected[0].token_ids)
    assert [d.token_ids for d in greedy_decode(fused, maps, **ids)] == [d.token_ids for d in expected]


def test_attention_weights_cover_the_image_locations_only(concept_model):
    state = concept_model.init_state(maps_with([True, False]))
    _, state = concept_model.step(torch.tensor([1, 1]), state)
    weights = concept_model.attention_weights(state)
    assert weights.shape == (2, 9) and bool((weights.sum(dim=1) < 1).all())  # the slots took the rest


@pytest.mark.parametrize(("native", "copy_bias"), [(True, 0.0), (False, 0.0), (True, 2.0)])
def test_the_fused_form_gives_the_reference_captions(concept_model, vocab, native, copy_bias):
    concept_model.config = dataclasses.replace(concept_model.config, copy_bias=copy_bias)
    fused = concept_model.for_inference("fp16", native=native)
    assert isinstance(fused, FusedConceptDecoder)
    maps = maps_with([True, False, True, False])
    ids = {"start_id": vocab.start_id, "end_id": vocab.end_id, "max_length": 8, "temperature": 1.5}
    for decode, options in ((greedy_decode, {}), (beam_search, {"beam_size": 3})):
        expected = decode(concept_model, maps, **ids, **options)
        ours = decode(fused, maps, **ids, **options)
        assert [d.token_ids for d in ours] == [d.token_ids for d in expected]
        assert [d.log_prob for d in ours] == pytest.approx([d.log_prob for d in expected], abs=1e-4)
        for d_ours, d_expected in zip(ours, expected):
            assert d_ours.steps[0].attention == pytest.approx(d_expected.steps[0].attention, abs=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_decoding_with_read_concepts_uses_them_for_those_features_only(concept_model, vocab, fused):
    decoder = concept_model.for_inference("fp16") if fused else concept_model
    maps = maps_with([True, False])
    ids = {"start_id": vocab.start_id, "end_id": vocab.end_id, "max_length": 8}
    with torch.inference_mode():
        read = with_read_concepts(decoder, maps, concept_model.concepts(maps))
        for decode, options in ((greedy_decode, {}), (beam_search, {"beam_size": 3})):
            expected = decode(decoder, maps, **ids, **options)
            assert [d.token_ids for d in decode(read, maps, **ids, **options)] == [d.token_ids for d in expected]
        # read as if both showed the cat: the bound features' slot masks follow what was read
        cat = concept_model.concepts(maps_with([True, True]))
        told = with_read_concepts(decoder, maps, cat)
        assert bool((told.init_state(maps)[-2][:, 0] == 0).all())  # the slot mask
        assert float(told.init_state(maps[1:])[-2][0, 0]) == float("-inf")  # other features: read afresh


def test_the_table_and_integer_buffers_survive_a_checkpoint(concept_model, vocab, table, tmp_path):
    spec = EncoderSpec("efficientnet_lite0", "test", 224, (0.5,) * 3, (0.5,) * 3)
    path = save_checkpoint(tmp_path / "concept.safetensors", concept_model, vocab, spec, concepts=table)
    loaded = load_checkpoint(path)
    assert loaded.concepts == ConceptTable.from_dict(table.to_dict())
    assert torch.equal(loaded.model.class_words, concept_model.class_words)
    maps = maps_with([True])
    assert torch.equal(loaded.model.concepts(maps).word_ids, concept_model.concepts(maps).word_ids)
