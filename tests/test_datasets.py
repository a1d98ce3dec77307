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


def _flickr_copy(tmp_path, mini_corpus):
    """A copy of the mini corpus whose text files a test may damage."""
    import shutil

    copy = tmp_path / "corpus"
    shutil.copytree(mini_corpus, copy)
    return copy, copy / "Flickr8k_text" / "Flickr8k.token.txt"


def test_a_byte_that_is_not_utf8_is_reported_with_its_file_and_line(tmp_path, mini_corpus):
    copy, tokens = _flickr_copy(tmp_path, mini_corpus)
    lines = tokens.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"a", b"\xff", 1)
    tokens.write_bytes(b"".join(lines))
    with pytest.raises(ValueError, match=r"Flickr8k.token.txt:3: not UTF-8 text \(byte 0xff\)"):
        load_corpus(copy)


def test_a_caption_line_without_a_tab_names_its_line(tmp_path, mini_corpus):
    copy, tokens = _flickr_copy(tmp_path, mini_corpus)
    lines = tokens.read_text(encoding="utf-8").splitlines()
    lines[4] = lines[4].replace("\t", " ")
    tokens.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"Flickr8k.token.txt:5: expected 'IMAGE#N<tab>CAPTION'"):
        load_corpus(copy)


def test_a_listed_image_that_is_missing_is_named(tmp_path, mini_corpus):
    copy, _ = _flickr_copy(tmp_path, mini_corpus)
    victim = sorted((copy / "images").iterdir())[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=rf"Flickr_8k\.\w+Images\.txt:\d+: {victim.name} is listed"):
        load_corpus(copy)


def test_empty_captions_are_dropped_with_a_count(tmp_path, mini_corpus):
    copy, tokens = _flickr_copy(tmp_path, mini_corpus)
    lines = tokens.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].split("\t")[0] + "\t   "
    lines[1] = lines[1].split("\t")[0] + "\t"
    tokens.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="dropped 2 empty captions"):
        corpus = load_corpus(copy)
    assert all(caption.strip() for image in corpus for caption in image.captions)
    assert sum(len(image.captions) for image in corpus) == len(lines) - 2


def test_an_image_whose_captions_are_all_empty_is_named(tmp_path, mini_corpus):
    copy, tokens = _flickr_copy(tmp_path, mini_corpus)
    tokens.write_text(
        "".join(line.split("\t")[0] + "\t\n" for line in tokens.read_text(encoding="utf-8").splitlines()),
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"Images\.txt:1: \S+ is listed but all its captions are empty"):
        load_corpus(copy)
