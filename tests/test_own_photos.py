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
from captioner.checkpoint import CheckpointError, load_checkpoint
from captioner.vocab import tokenize
from training import finetune
from training.datasets import load_corpus


def _zorblax_folder(folder: Path, mini_corpus: Path) -> tuple[list[str], list[str]]:
    """Photos of the mini corpus with their own captions, "dog" renamed "zorblax" in those whose five
    captions all name a dog, plus four photos without dogs as they are. Returns (dog photos, others)."""
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
        rows += [(image.name, caption) for caption in captions]
    with open(folder / "metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("file_name", "text"), *rows])
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
    assert (tmp_path / "run" / "features").is_dir() and (tmp_path / "run" / "log.csv").is_file()


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


def test_a_checkpoint_with_a_tuned_encoder_is_refused_before_any_work(tmp_path):
    checkpoint = load_checkpoint(default_checkpoint_path())
    tuned = dataclasses.replace(checkpoint, encoder_weights={"head.weight": torch.zeros(1)}, encoder_tuned_stages=1)
    path = tuned.save(tmp_path / "tuned.safetensors")
    with pytest.raises(CheckpointError, match="fine-tuned its encoder's last stages"):
        finetune.main(["--data", str(tmp_path / "nowhere"), "--init", str(path), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
