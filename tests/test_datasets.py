from __future__ import annotations

import json

import pytest

from training.datasets import load_corpus


def test_flickr8k_text_format(mini_corpus):
    corpus = load_corpus(mini_corpus)
    assert [sum(i.split == s for i in corpus) for s in ("train", "val", "test")] == [24, 8, 8]
    assert all(len(i.captions) == 5 and i.path.is_file() for i in corpus)


def test_karpathy_json_gives_the_same_corpus(tmp_path, mini_corpus):
    corpus = load_corpus(mini_corpus)
    entries = [
        {
            "filename": i.name,
            "split": "restval" if n == 0 else i.split,
            "sentences": [{"raw": c} for c in i.captions],
        }
        for n, i in enumerate(corpus)
    ]
    (tmp_path / "dataset_mini.json").write_text(json.dumps({"images": entries}))
    (tmp_path / "images").symlink_to(mini_corpus / "images")
    other = load_corpus(tmp_path)
    assert [(i.name, i.captions) for i in other] == [(i.name, i.captions) for i in corpus]
    assert other[0].split == "train"  # Karpathy "restval" is training data


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="neither"):
        load_corpus(tmp_path)


def test_coco_caption_json(tmp_path, mini_corpus):
    corpus = load_corpus(mini_corpus)
    (tmp_path / "annotations").mkdir()
    for year_split, split in (("train2014", "train"), ("val2014", "val")):
        chosen = [i for i in corpus if i.split == split]
        (tmp_path / year_split).symlink_to(mini_corpus / "images")
        data = {
            "images": [{"id": n, "file_name": i.name} for n, i in enumerate(chosen)],
            "annotations": [{"image_id": n, "caption": c} for n, i in enumerate(chosen) for c in i.captions],
        }
        (tmp_path / "annotations" / f"captions_{year_split}.json").write_text(json.dumps(data))
    coco = load_corpus(tmp_path)
    assert [sum(i.split == s for i in coco) for s in ("train", "val")] == [24, 8]
    assert all(i.path.is_file() and len(i.captions) == 5 for i in coco)
