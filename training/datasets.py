"""Caption corpora in their own formats: Flickr8k text files, COCO caption JSON, Karpathy-style JSON."""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CaptionedImage", "load_corpus", "SPLITS"]

SPLITS = ("train", "val", "test")
_FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}


@dataclass(frozen=True)
class CaptionedImage:
    """One image with its reference captions (raw text, as the annotators wrote them)."""

    path: Path
    split: str
    captions: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name


def load_corpus(data_dir: str | Path, *, annotations: str | Path | None = None) -> list[CaptionedImage]:
    """Read a captioned-image corpus, sorted by file name.

    Args:
        data_dir: Folder holding ``images/`` and ``Flickr8k_text/``; or MS-COCO's
            ``train2014/``, ``val2014/`` and ``annotations/captions_{train,val}2014.json``
            (official split: train2014 -> train, val2014 -> val); or a ``dataset_*.json``.
        annotations: A Karpathy-style ``dataset_*.json`` (Flickr8k/30k, COCO) to use
            instead of the Flickr8k text files; relative paths are taken from ``data_dir``.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist")
    if annotations is not None:
        json_path = Path(annotations)
        return _load_karpathy(json_path if json_path.is_absolute() else data_dir / json_path, data_dir)
    if (data_dir / "Flickr8k_text").is_dir():
        return _load_flickr8k(data_dir)
    if (data_dir / "annotations" / "captions_train2014.json").is_file():
        return _load_coco(data_dir)
    candidates = sorted(data_dir.glob("dataset_*.json"))
    if candidates:
        return _load_karpathy(candidates[0], data_dir)
    raise FileNotFoundError(f"{data_dir} has neither Flickr8k_text/ nor a dataset_*.json annotation file")


def _load_flickr8k(data_dir: Path) -> list[CaptionedImage]:
    text_dir = data_dir / "Flickr8k_text"
    token_file = text_dir / "Flickr8k.token.txt"
    captions: dict[str, list[str]] = defaultdict(list)
    empty = 0
    for number, line in enumerate(_text_lines(token_file), start=1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        if not tab:
            raise ValueError(f"{token_file}:{number}: expected 'IMAGE#N<tab>CAPTION', found no tab in {line[:60]!r}")
        name = key.split("#", 1)[0]
        if not caption.strip():
            empty += 1
            captions.setdefault(name, [])
            continue
        captions[name].append(caption.strip())
    if empty:
        warnings.warn(f"{token_file}: dropped {empty} empty captions", stacklevel=3)
    images = []
    for split, file_name in _FLICKR8K_SPLIT_FILES.items():
        split_file = text_dir / file_name
        for number, line in enumerate(_text_lines(split_file), start=1):
            for name in line.split():
                if name not in captions:
                    raise ValueError(f"{split_file}:{number}: {name} is listed but has no captions")
                if not captions[name]:
                    raise ValueError(f"{split_file}:{number}: {name} is listed but all its captions are empty")
                path = data_dir / "images" / name
                if not path.is_file():
                    raise FileNotFoundError(f"{split_file}:{number}: {name} is listed but {path} does not exist")
                images.append(CaptionedImage(path, split, tuple(captions[name])))
    return sorted(images, key=lambda image: image.name)


def _text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; a byte that is not UTF-8 is reported with its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text (byte {data[error.start]:#04x}); re-save the file as UTF-8"
        ) from error


def _load_karpathy(json_path: Path, data_dir: Path) -> list[CaptionedImage]:
    data = json.loads(json_path.read_text(encoding="utf-8"))
    images = []
    for entry in data["images"]:
        split = {"restval": "train"}.get(entry["split"], entry["split"])
        folder = data_dir / "images" if not entry.get("filepath") else data_dir / entry["filepath"]
        sentences = tuple(s["raw"].strip() for s in entry["sentences"])
        images.append(CaptionedImage(folder / entry["filename"], split, sentences))
    return sorted(images, key=lambda image: str(image.path))


def _load_coco(data_dir: Path) -> list[CaptionedImage]:
    images = []
    for split, year_split in (("train", "train2014"), ("val", "val2014")):
        path = data_dir / "annotations" / f"captions_{year_split}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing")
        data = json.loads(path.read_text(encoding="utf-8"))
        captions: dict[int, list[str]] = defaultdict(list)
        for annotation in data["annotations"]:
            captions[annotation["image_id"]].append(annotation["caption"].strip())
        for entry in data["images"]:
            images.append(
                CaptionedImage(data_dir / year_split / entry["file_name"], split, tuple(captions[entry["id"]]))
            )
    return sorted(images, key=lambda image: str(image.path))
