"""Held-out objects on Flickr8k (after DCC): can the captioner name objects its captions never showed?

    python -m training.heldout_objects --data ../shared/flickr8k --run-dir runs/heldout --threads 2

Every training image whose captions mention one of eight objects
(:data:`training.mentions.HELD_OUT_OBJECTS`: bicycle, boat, car, camera, bench, swing, motorcycle,
ball, with their synonyms) is removed; the same cross-entropy recipe then trains the soft-attention
decoder and the concept decoder on what is left, and the concept decoder's copy bias, slot
threshold and required concepts (constrained beam search) are chosen on ``val`` by the objects'
mean F1 (:mod:`training.tune_concepts`). On
``test``, each model's default captions are scored for each object by the F1 of mentioning it (an
image shows it when at least two of its five references mention it), for invented subjects
(:func:`training.mentions.invented_subjects`), and with METEOR and CIDEr on the
whole split. Trained runs are reused (and interrupted ones resumed) from ``--run-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from captioner.captioner import Captioner
from captioner.decoders import decoder_class
from training import tune_concepts
from training.config_cli import config_from_settings
from training.datasets import load_corpus
from training.mentions import HELD_OUT_OBJECTS, invented_subjects, object_f1
from training.metrics import java_available, score_captions
from training.train import TrainConfig, train

__all__ = ["main", "score_heldout"]

DECODERS = ("soft_attention", "concept_attention")


def held_out_words() -> list[str]:
    """Every word (and synonym) of the held-out objects."""
    return sorted({word for words in HELD_OUT_OBJECTS.values() for word in words})


def caption_split(captioner: Captioner, data: Path, split: str, *, batch_size: int = 32) -> dict[str, str]:
    """The checkpoint's default caption of every image of ``split``."""
    images = [image for image in load_corpus(data) if image.split == split]
    predictions = {}
    for start in tqdm(range(0, len(images), batch_size), desc=f"captioning {split}", unit="batch"):
        chunk = images[start : start + batch_size]
        results = captioner.caption_batch([image.path for image in chunk], top_k=1)
        predictions.update({image.name: result.caption for image, result in zip(chunk, results)})
    return predictions


def score_heldout(predictions: dict[str, str], references: dict[str, list[str]]) -> dict:
    """Object F1 per held-out object and their mean, invented subjects, METEOR and CIDEr."""
    metrics = score_captions(predictions, references, use_java=java_available())
    return {
        "objects": object_f1(predictions, references),
        "invented_subjects": invented_subjects(predictions, references),
        "metrics": metrics,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/heldout"))
    parser.add_argument("--features", default="runs/features")
    parser.add_argument("--decoders", nargs="+", default=list(DECODERS), choices=DECODERS)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--out", type=Path, help="report JSON (default: <run-dir>/heldout_<split>.json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    references = {image.name: list(image.captions) for image in load_corpus(args.data) if image.split == args.split}
    report: dict = {"held_out": HELD_OUT_OBJECTS, "split": args.split}
    for decoder in args.decoders:
        run_dir = args.run_dir / decoder
        best = run_dir / "best.safetensors"
        if not (run_dir / "done").is_file():
            config = config_from_settings(
                TrainConfig,
                dict(
                    data=str(args.data),
                    run_dir=str(run_dir),
                    features=args.features,
                    decoder=decoder,
                    exclude_words=" ".join(held_out_words()),
                    image_dropout=0.2,
                    lr_decay=0.85,
                    epochs=args.epochs,
                    patience=3,
                    bucket_window=50,
                    threads=args.threads,
                    resume=True,
                ),
            )
            best = train(config)
            (run_dir / "done").write_text("trained\n")
        if decoder_class(decoder).reads_concepts:  # its copy bias and slot threshold, chosen on val
            tuned = run_dir / "tuned.safetensors"
            if not tuned.is_file():
                shutil.copyfile(best, run_dir / "tuning.safetensors")
                tune_concepts.main(
                    [
                        "--checkpoint",
                        str(run_dir / "tuning.safetensors"),
                        "--data",
                        str(args.data),
                        "--select",
                        "mean_f1",
                    ]
                    + ["--biases", "0", "1.5", "3", "--thresholds", "0.1", "0.2", "--apply"]
                    + ["--require-concepts", "0", "0.1", "0.2", "0.3"]
                )
                os.replace(run_dir / "tuning.safetensors", tuned)
            best = tuned
        predictions = caption_split(Captioner.load(best), args.data, args.split)
        report[decoder] = {**score_heldout(predictions, references), "captions": predictions}
        objects = report[decoder]["objects"]
        print(
            f"{decoder}: mean F1 {objects['mean']['f1']:.1f}, "
            + ", ".join(f"{name} {row['f1']:.0f}" for name, row in objects.items() if name != "mean")
        )
    out = args.out or args.run_dir / f"heldout_{args.split}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
