"""The own-photos path end to end: an imagefolder of real photos whose captions call the dogs "zorblax",
one ``training.finetune`` command from the shipped checkpoint, and the result served by ``Captioner.load``."""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from captioner import Captioner
from captioner.captioner import default_checkpoint_path
from captioner.checkpoint import load_checkpoint
from captioner.vocab import tokenize
from training import finetune
from training.datasets import load_corpus
from training.encoder_tuning import encoder_to_train_on


def _zorblax_folder(folder: Path, mini_corpus: Path) -> tuple[list[str], list[str]]:
    """Photos of the mini corpus with their own captions, "dog" renamed "zorblax" in those whose five
    captions all name a dog, plus four photos without dogs as they are; every fourth dog photo is
    in the validation split, so the epoch kept is one whose captions use the new word. Returns
    (dog photos, others)."""
    folder.mkdir()
    rows, dogs, others = [], [], []
    for image in load_corpus(mini_corpus):
        named = sum("dog" in tokenize(caption) for caption in image.captions)
        if named == 5:
            dogs.append(image.name)
            captions = [re.sub(r"\bdogs?\b", "zorblax", caption.lower()) for caption in image.captions]
        elif named == 0 and image.split == "train" and len(others) < 4:
            others.append(image.name)
            captions = list(image.captions)
        else:
            continue
        (folder / image.name).symlink_to(image.path)
        split = "validation" if image.name in dogs[::4] else "train"
        rows += [(image.name, caption, split) for caption in captions]
    with open(folder / "metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("file_name", "text", "split"), *rows])
    return dogs, others


@pytest.mark.slow
def test_fine_tuning_the_shipped_checkpoint_on_own_photos_learns_a_new_word(tmp_path, mini_corpus):
    dogs, others = _zorblax_folder(tmp_path / "photos", mini_corpus)
    assert len(dogs) == 12 and len(others) == 4
    best = finetune.main(["--data", str(tmp_path / "photos"), "--out", str(tmp_path / "run"), "--epochs", "3"])

    captioner = Captioner.load(best)  # as the app loads CAPTIONER_CHECKPOINT
    assert "zorblax" in captioner.vocab.tokens and "dog" in captioner.vocab.tokens
    names = dogs + others
    results = captioner.caption_batch([tmp_path / "photos" / name for name in names])
    captions = {name: result.caption for name, result in zip(names, results)}
    named = [name for name in dogs if "zorblax" in captions[name].split()]
    print(f"{len(named)} of {len(dogs)} dog photos captioned with zorblax:", captions)
    assert len(named) >= len(dogs) // 2, captions  # the new word, for what the captions used it for
    assert not any("zorblax" in captions[name].split() for name in others), captions
    assert (tmp_path / "run" / "log.csv").is_file()
    # the shipped encoder's tuned stage is kept, and its maps were cached apart from the untuned encoder's
    shipped, tuned = load_checkpoint(default_checkpoint_path()), load_checkpoint(best)
    assert tuned.encoder_tuned_stages == shipped.encoder_tuned_stages == 1
    assert all(torch.equal(tuned.encoder_weights[n], w) for n, w in shipped.encoder_weights.items())
    caches = [cache.name for cache in (tmp_path / "run" / "features").iterdir()]
    assert len(caches) == 1 and caches[0].startswith("efficientnet_lite0_tuned_")


def test_finetuning_keeps_the_checkpoints_shape_grows_its_vocabulary_and_selects_by_val_loss(tmp_path):
    model = load_checkpoint(default_checkpoint_path()).config
    config = finetune.train_config(
        finetune.FinetuneConfig(data="photos", out=str(tmp_path / "run")), default_checkpoint_path(), model
    )
    model = config.model
    assert (model.decoder, model.image_dropout, model.concept_slots) == ("concept_attention", 0.2, 3)
    assert (model.embed_dim, model.hidden_dim, model.attention_dim) == (512, 512, 512)
    assert config.grow_vocab and config.select_metric == "val_loss" and config.init == str(default_checkpoint_path())
    assert config.features == str(tmp_path / "run" / "features")  # never the Flickr8k cache


def test_a_tuned_encoder_is_trained_on_as_it_is_under_a_cache_of_its_own():
    shipped = load_checkpoint(default_checkpoint_path())
    assert shipped.encoder_tuned_stages == 1  # the shipped encoder's last stage was tuned
    encoder, cache_name, kept = encoder_to_train_on("efficientnet_lite0", shipped)
    assert cache_name.startswith("efficientnet_lite0_tuned_") and kept["encoder_tuned_stages"] == 1
    name = "backbone.model.conv_head.weight"
    assert torch.equal(encoder.state_dict()[name], shipped.encoder_weights[name].float())
    plain, plain_name, nothing = encoder_to_train_on("efficientnet_lite0", None)
    assert (plain_name, nothing) == ("efficientnet_lite0", {})
    assert not torch.equal(plain.state_dict()[name], encoder.state_dict()[name])
    nudged = dataclasses.replace(
        shipped, encoder_weights={**shipped.encoder_weights, name: shipped.encoder_weights[name] * 2}
    )
    assert encoder_to_train_on("efficientnet_lite0", nudged)[1] != cache_name  # other weights, another cache
    with pytest.raises(ValueError, match="start checkpoint's encoder is efficientnet_lite0"):
        encoder_to_train_on("efficientnet_lite1", shipped)
