from __future__ import annotations

import csv
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


def _photo_folder(folder, mini_corpus, count: int):
    """``folder`` holding the first ``count`` photos of the mini corpus (links to them) and their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [image.name for image in load_corpus(mini_corpus)[:count]]
    for name in names:
        (folder / name).symlink_to(mini_corpus / "images" / name)
    return names


def test_an_imagefolder_csv_gives_each_photo_its_rows_captions_and_split(tmp_path, mini_corpus):
    a, b, c = _photo_folder(tmp_path, mini_corpus, 3)
    rows = [("file_name", "text", "split"), (a, "a dog", "train"), (b, "a cat, asleep", "validation")]
    rows += [(a, "a dog on grass", "train"), (c, "a boat", "test")]
    with open(tmp_path / "metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    corpus = {image.name: image for image in load_corpus(tmp_path)}
    assert corpus[a].captions == ("a dog", "a dog on grass") and corpus[a].split == "train"
    assert corpus[b].captions == ("a cat, asleep",) and corpus[b].split == "val"  # Hugging Face's name for val
    assert corpus[c].split == "test" and corpus[a].path == tmp_path / a


def test_an_imagefolder_jsonl_in_split_folders_reads_caption_lists(tmp_path, mini_corpus):
    a, b = _photo_folder(tmp_path / "train", mini_corpus, 2)
    (tmp_path / "train" / "metadata.jsonl").write_text(
        json.dumps({"file_name": a, "caption": ["one", "two"]}) + "\n" + json.dumps({"file_name": b, "caption": "x"})
    )
    (c,) = _photo_folder(tmp_path / "validation", mini_corpus, 3)[2:]
    (tmp_path / "validation" / "metadata.jsonl").write_text(json.dumps({"file_name": c, "caption": "y"}) + "\n")
    corpus = {image.name: image for image in load_corpus(tmp_path)}
    assert (corpus[a].captions, corpus[a].split) == (("one", "two"), "train")
    assert (corpus[c].captions, corpus[c].split) == (("y",), "val")


def test_without_a_validation_split_a_hashed_tenth_of_the_photos_is_held_out(tmp_path, mini_corpus):
    names = _photo_folder(tmp_path, mini_corpus, 30)
    lines = ["file_name,text", *(f"{name},a photo" for name in names)]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    held = [image.name for image in load_corpus(tmp_path) if image.split == "val"]
    assert len(held) == 3
    (tmp_path / "metadata.csv").write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    assert [image.name for image in load_corpus(tmp_path) if image.split == "val"] == held  # not by row order
    (tmp_path / "metadata.csv").write_text("\n".join(lines[:3]) + "\n")
    assert sorted(image.split for image in load_corpus(tmp_path)) == ["train", "val"]  # at least one, never all


def test_imagefolder_rows_it_cannot_use_are_dropped_with_their_lines(tmp_path, mini_corpus):
    a, b = _photo_folder(tmp_path, mini_corpus, 2)
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    rows = [
        ("file_name", "text", "split"),
        (a, "a dog", "train"),
        ("missing.jpg", "a ghost", "train"),  # line 3
        (a, "  ", "train"),  # line 4
        (b, "a cat", "validation"),
        ("broken.jpg", "a photo", "train"),  # line 6
        (b, "a cat again", "trian"),  # line 7
    ]
    with open(tmp_path / "metadata.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.warns(UserWarning) as caught:
        corpus = load_corpus(tmp_path)
    messages = " | ".join(str(w.message) for w in caught)
    assert (
        "metadata.csv: dropped 2 row(s) with a missing or unreadable photo (line 3 (missing.jpg: no such file)"
        in messages
    )
    assert "6 (broken.jpg: " in messages
    assert "metadata.csv: dropped 1 row(s) with an empty caption (line 4" in messages
    assert (
        "metadata.csv: dropped 1 row(s) with an unknown split (use train, validation or test) (line 7 (trian))"
        in messages
    )
    assert {image.name: image.captions for image in corpus} == {a: ("a dog",), b: ("a cat",)}


def test_imagefolder_without_its_columns_names_the_file(tmp_path, mini_corpus):
    (a,) = _photo_folder(tmp_path, mini_corpus, 1)
    (tmp_path / "metadata.csv").write_text(f"image,text\n{a},a dog\n")
    with pytest.raises(ValueError, match=r"metadata\.csv: no file_name column \(found image, text\)"):
        load_corpus(tmp_path)
    (tmp_path / "metadata.csv").unlink()
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": a, "label": 3}) + "\n{broken\n")
    with pytest.raises(ValueError, match=r"metadata\.jsonl: no caption column; name it 'text'"):
        load_corpus(tmp_path)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": a, "text": "a dog"}) + "\n{broken\n")
    with pytest.warns(
        UserWarning, match=r"metadata\.jsonl: dropped 1 row\(s\) with a line that is not a JSON object \(line 2"
    ):
        assert [image.captions for image in load_corpus(tmp_path)] == [("a dog",)]
