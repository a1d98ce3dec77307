"""Command line: ``python -m captioner caption [--beam N] [--top-k K] [--json] PATH...``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from captioner.captioner import Captioner
from captioner.checkpoint import CheckpointError
from captioner.media import MediaError, is_video_path, media_files
from captioner.options import DEFAULT_MAX_LENGTH, DEFAULT_TOP_K, check_decoding_options, check_frame_count
from captioner.precision import DECODER_PRECISIONS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m captioner", description="Caption images and video clips.")
    commands = parser.add_subparsers(dest="command", required=True)
    caption = commands.add_parser("caption", help="caption image or video files, one line each")
    caption.add_argument(
        "paths", nargs="+", metavar="PATH", help="image or video files, or folders of them (their photos and videos)"
    )
    caption.add_argument("--checkpoint", help="checkpoint file (default: the shipped one)")
    caption.add_argument("--beam", type=int, help="beam size, 1 = greedy (default: the checkpoint's choice)")
    caption.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="alternatives recorded per word")
    caption.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="maximum words")
    caption.add_argument("--length-penalty", type=float, help="beam length normalisation exponent")
    caption.add_argument(
        "--no-repeat-ngram", type=int, help="beam search: never repeat an n-gram of this size (0 = off)"
    )
    caption.add_argument("--sample", action="store_true", help="sample words instead of greedy/beam")
    caption.add_argument(
        "--temperature", type=float, help="softmax temperature (default: the checkpoint's calibrated one)"
    )
    caption.add_argument("--top-p", type=float, default=1.0, help="nucleus size for --sample")
    caption.add_argument(
        "--require-concepts",
        type=float,
        metavar="P",
        help="name every ImageNet concept of probability P or more (constrained beam search; 0 = off; "
        "default: the checkpoint's choice; concept decoders)",
    )
    caption.add_argument("--seed", type=int, help="random seed for --sample")
    caption.add_argument(
        "--precision", choices=DECODER_PRECISIONS, help="decoder weight precision (default: fp16 on the CPU)"
    )
    caption.add_argument("--frames", type=int, default=8, help="frames sampled from each video")
    caption.add_argument("--json", action="store_true", help="one JSON object per line")
    caption.add_argument(
        "--concepts",
        action="store_true",
        help="add a column with the ImageNet concepts behind each caption (concept decoders)",
    )
    return parser


def _expanded(paths: Sequence[str]) -> list[str]:
    """Each path, a folder replaced by the photos and videos in it (an empty one kept, to report)."""
    expanded = []
    for path in paths:
        inside = media_files(path) if Path(path).is_dir() else []
        expanded.extend([str(file) for file in inside] or [path])
    return expanded


def _shown(path: str) -> str:
    """``path`` on one line and printable: control characters (a newline in a file name) and
    undecodable bytes written as escapes (``\\n``, ``\\xff``)."""
    return "".join(char if char.isprintable() else _escaped(char) for char in path)


def _escaped(char: str) -> str:
    if "\udc80" <= char <= "\udcff":  # a byte the file system's encoding could not decode
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


# inputs from which tracing the encoder pays for itself (it costs about what it saves over a few
# hundred images; the maps are the same either way)
TRACE_FROM = 500
_FLAGS = {"beam_size": "--beam", "num_frames": "--frames"}  # options whose flag is not their name


def main(argv: Sequence[str] | None = None) -> int:
    """Caption every path; a bad input is reported and skipped. Returns 1 if any failed, 2 when
    nothing could be captioned (bad options, checkpoint or output)."""
    parser = _parser()
    args = parser.parse_args(argv)
    options = {
        "beam_size": args.beam,
        "top_k": args.top_k,
        "max_length": args.max_length,
        "length_penalty": args.length_penalty,
        "no_repeat_ngram": args.no_repeat_ngram,
        "temperature": args.temperature,
        "sample": args.sample,
        "top_p": args.top_p,
        "seed": args.seed,
        "require_concepts": args.require_concepts,
    }
    try:
        check_decoding_options(**{k: v for k, v in options.items() if k != "sample"})
        check_frame_count(args.frames)
    except ValueError as error:
        name, _, rest = str(error).partition(" ")
        parser.error(f"{_FLAGS.get(name, '--' + name.replace('_', '-'))} {rest}")  # exits 2 with the usage line
    if sys.stdout is None:  # started with its standard output closed: captions would be lost
        print("error: standard output is closed; redirect it to a file or a pipe", file=sys.stderr)
        return 2
    paths = _expanded(args.paths)
    try:
        trace = len(paths) >= TRACE_FROM
        captioner = Captioner.load(args.checkpoint, decoder_precision=args.precision, trace_encoder=trace)
    except (CheckpointError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.require_concepts and not captioner.checkpoint.model.reads_concepts:
        print("error: --require-concepts needs a checkpoint whose decoder reads concepts", file=sys.stderr)
        return 2
    if args.require_concepts and args.sample:
        print("error: --require-concepts works with greedy decoding and beam search, not --sample", file=sys.stderr)
        return 2
    try:
        failures = _caption_all(captioner, paths, args, options)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except OSError as error:  # a full disk, a closed descriptor
        print(f"error: cannot write the captions ({error.strerror or error})", file=sys.stderr)
        return 2
    return 1 if failures else 0


def _caption_all(captioner: Captioner, paths: list[str], args: argparse.Namespace, options: dict) -> int:
    """Print each path's caption (or its error); returns the number that failed."""
    failures = 0
    for path in paths:
        try:
            if Path(path).is_dir():
                raise MediaError("no photos or videos in this folder")
            if is_video_path(path):
                result = captioner.caption_video(path, num_frames=args.frames, **options)
            else:
                result = captioner.caption(path, **options)
        except (MediaError, ValueError) as error:
            failures += 1
            message = str(error)
            if args.json:
                print(json.dumps({"path": path, "error": message}))
            print(f"error: {_shown(path)}: {message}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"path": path, **result.to_dict()}))
        else:
            concepts = "; ".join(c.describe() for c in result.concepts if c.in_slot)
            print(f"{_shown(path)}\t{result.caption}" + (f"\t{concepts}" if args.concepts else ""))
    return failures
