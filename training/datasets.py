"""Caption corpora in their own formats: Flickr8k text files, COCO caption JSON, Karpathy-style JSON,
and a folder of one's own photos in Hugging Face's ``imagefolder`` layout."""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from captioner.media import MediaError, check_photo

__all__ = ["CaptionedImage", "load_corpus", "SPLITS", "VAL_SHARE"]

SPLITS = ("train", "val", "test")
_FLICKR8K_SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
# imagefolder: the metadata files, the caption columns (first found wins) and the split names
_METADATA_FILES = ("metadata.csv", "metadata.jsonl")
_CAPTION_COLUMNS = ("text", "caption")
_SPLIT_NAMES = {"train": "train", "validation": "val", "val": "val", "valid": "val", "dev": "val", "test": "test"}
VAL_SHARE = 0.1  # of an imagefolder's training photos held out as val when no row names that split


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
            (official split: train2014 -> train, val2014 -> val); or a ``dataset_*.json``; or
            a folder of photos with a ``metadata.csv`` / ``metadata.jsonl`` (Hugging Face's
            ``imagefolder`` layout, see :func:`_load_imagefolder`).
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
    metadata = _metadata_files(data_dir)
    if metadata:
        return _load_imagefolder(data_dir, metadata)
    raise FileNotFoundError(
        f"{data_dir} has neither Flickr8k_text/, a dataset_*.json annotation file nor a metadata.csv or "
        "metadata.jsonl (file_name and text columns, one row per caption)"
    )


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


def _metadata_files(data_dir: Path) -> list[tuple[Path, str | None]]:
    """An imagefolder's metadata files: the folder's own, then those of its split folders (``train/``,
    ``validation/``, ``test/``; ``val/`` and ``dev/`` too), each with the split its folder names."""
    folders = [(data_dir, None), *((data_dir / name, split) for name, split in _SPLIT_NAMES.items())]
    found = []
    for folder, split in folders:
        present = [folder / name for name in _METADATA_FILES if (folder / name).is_file()]
        if len(present) > 1:
            raise ValueError(f"{folder} holds both metadata.csv and metadata.jsonl; keep one of them")
        found += [(path, split) for path in present]
    return found


class _Dropped:
    """Rows of one metadata file left out, by reason; reported as one warning per reason."""

    def __init__(self, path: Path) -> None:
        self.path, self.reasons = path, defaultdict(list)

    def add(self, reason: str, line: int, detail: str = "") -> None:
        self.reasons[reason].append(f"{line} ({detail})" if detail else str(line))

    def warn(self) -> None:
        for reason, lines in self.reasons.items():
            shown = ", ".join(lines[:5]) + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")
            warnings.warn(f"{self.path}: dropped {len(lines)} row(s) with {reason} (line {shown})", stacklevel=4)


def _metadata_records(path: Path, dropped: _Dropped) -> tuple[list[tuple[int, dict]], list[str]]:
    """(line, record) for each row of a metadata file, and its columns."""
    lines = _text_lines(path)
    if path.suffix == ".csv":
        reader = csv.DictReader(lines)
        records = [(reader.line_num, record) for record in reader]
        return records, list(reader.fieldnames or [])
    records, columns = [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            dropped.add("a line that is not a JSON object", number, error.msg)
            continue
        if not isinstance(record, dict):
            dropped.add("a line that is not a JSON object", number)
            continue
        records.append((number, record))
        columns.update(dict.fromkeys(record))
    return records, list(columns)


def _load_imagefolder(data_dir: Path, metadata: list[tuple[Path, str | None]]) -> list[CaptionedImage]:
    """One's own photos in Hugging Face's ``imagefolder`` layout.

    Each ``metadata.csv`` / ``metadata.jsonl`` row names a photo by ``file_name`` (relative to the
    metadata file's folder) and gives one caption in a ``text`` column (or ``caption``; a JSON list
    gives several); rows naming the same photo add captions. An optional ``split`` column says
    ``train``, ``validation`` (or ``val``) or ``test``; without it a photo belongs to the split its
    metadata file's folder names, else to ``train``. When no photo is in ``val``, a share of the
    training photos (:data:`VAL_SHARE`, at least one) chosen by a hash of their file names is held
    out as ``val``: the same photos on every run. Rows with an empty caption, a missing or
    unreadable photo, an unknown split or a bad JSON line are left out with a warning naming
    their file and lines; a file without a ``file_name`` or caption column is an error.
    """
    captions: dict[str, list[str]] = defaultdict(list)
    paths: dict[str, Path] = {}
    splits: dict[str, str] = {}
    for path, folder_split in metadata:
        dropped = _Dropped(path)
        records, columns = _metadata_records(path, dropped)
        if "file_name" not in columns:
            raise ValueError(f"{path}: no file_name column (found {', '.join(columns) or 'none'})")
        caption_column = next((c for c in _CAPTION_COLUMNS if c in columns), None)
        if caption_column is None:
            raise ValueError(f"{path}: no caption column; name it 'text' (or 'caption')")
        for line, record in records:
            file_name = str(record.get("file_name") or "").strip()
            value = record.get(caption_column)
            texts = [str(t).strip() for t in (value if isinstance(value, list) else [value]) if t is not None]
            split_value = str(record.get("split") or "").strip().lower()
            split = _SPLIT_NAMES.get(split_value) if split_value else folder_split or "train"
            if not file_name:
                dropped.add("no file_name", line)
                continue
            if split is None:
                dropped.add("an unknown split (use train, validation or test)", line, split_value)
                continue
            photo = path.parent / file_name
            name = photo.name
            if name in paths and paths[name] != photo:
                dropped.add("the file name of another photo (features are kept by name: rename one)", line, file_name)
                continue
            if name not in paths:
                try:
                    check_photo(photo)
                except MediaError as error:
                    dropped.add("a missing or unreadable photo", line, f"{file_name}: {error}")
                    continue
                paths[name], splits[name] = photo, split
            elif splits[name] != split:
                dropped.add("a split other than the one the photo's first row gives", line, file_name)
                continue
            kept = [text for text in texts if text]
            if not kept:
                dropped.add("an empty caption", line, file_name)
            captions[name] += kept
        dropped.warn()
    images = [CaptionedImage(paths[name], splits[name], tuple(texts)) for name, texts in captions.items() if texts]
    if not images:
        raise ValueError(f"{data_dir}: no photo with a caption in {', '.join(str(p) for p, _ in metadata)}")
    if not any(image.split == "val" for image in images):
        images = _hold_out_val(images)
    return sorted(images, key=lambda image: image.name)


def _hold_out_val(images: list[CaptionedImage]) -> list[CaptionedImage]:
    """``images`` with :data:`VAL_SHARE` of the training photos (at least one, never all) moved to ``val``:
    those whose file names hash lowest (the same photos on every run, whatever the rows' order)."""
    train = sorted((i for i in images if i.split == "train"), key=lambda i: hashlib.sha1(i.name.encode()).hexdigest())
    count = min(max(1, round(VAL_SHARE * len(train))), len(train) - 1)
    held = {image.name for image in train[:count]}
    return [CaptionedImage(i.path, "val", i.captions) if i.name in held else i for i in images]
