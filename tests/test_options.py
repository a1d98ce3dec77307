"""Decoding options out of range are refused with their name, by the CLI and Captioner alike."""

from __future__ import annotations

import pytest

from captioner.cli import main
from captioner.options import check_decoding_options, check_frame_count

BAD_OPTIONS = [
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": float("nan")}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"no_repeat_ngram": -1}, "no_repeat_ngram"),
    ({"seed": 10**23}, "seed"),
    ({"seed": -1}, "seed"),
    ({"beam_size": 0}, "beam_size"),
    ({"max_length": 0}, "max_length"),
    ({"max_length": 10**6}, "max_length"),
    ({"top_k": 0}, "top_k"),
    ({"length_penalty": float("nan")}, "length_penalty"),
    ({"require_concepts": -0.1}, "require_concepts"),
    ({"require_concepts": 1.5}, "require_concepts"),
    ({"require_concepts": float("nan")}, "require_concepts"),
]


@pytest.mark.parametrize(("options", "name"), BAD_OPTIONS)
def test_an_option_out_of_range_is_refused_with_its_name(options, name):
    with pytest.raises(ValueError, match=rf"^{name} must be .*not "):
        check_decoding_options(**options)


def test_defaults_and_ordinary_values_pass():
    check_decoding_options()
    check_decoding_options(beam_size=3, top_k=5, max_length=20, length_penalty=0.7, no_repeat_ngram=3)
    check_decoding_options(temperature=0.8, top_p=0.9, seed=2**64 - 1, vocab_size=10)
    check_decoding_options(require_concepts=0.0)
    check_decoding_options(require_concepts=0.8)
    check_frame_count(8)


def test_top_k_is_bounded_by_the_vocabulary():
    with pytest.raises(ValueError, match="top_k must be a whole number from 1 to 10"):
        check_decoding_options(top_k=11, vocab_size=10)


@pytest.mark.parametrize("frames", [0, -3, 10**6])
def test_a_frame_count_out_of_range_is_refused(frames):
    with pytest.raises(ValueError, match="num_frames"):
        check_frame_count(frames)


@pytest.mark.parametrize(("options", "name"), BAD_OPTIONS[:4] + BAD_OPTIONS[7:9])
def test_captioner_refuses_the_same_options(shipped, dog_photo, options, name):
    with pytest.raises(ValueError, match=name):
        shipped.caption(dog_photo, sample=True, **options)


@pytest.mark.parametrize(
    ("arguments", "flag"),
    [
        (["--temperature", "0"], "--temperature"),
        (["--temperature", "nan", "--sample"], "--temperature"),
        (["--temperature", "inf"], "--temperature"),
        (["--no-repeat-ngram", "-1"], "--no-repeat-ngram"),
        (["--seed", str(10**23), "--sample"], "--seed"),
        (["--frames", "0"], "--frames"),
        (["--beam", "0"], "--beam"),
    ],
)
def test_cli_refuses_a_bad_option_once_before_reading_any_file(dog_photo, capsys, arguments, flag):
    with pytest.raises(SystemExit) as exit_:
        main(["caption", *arguments, str(dog_photo), str(dog_photo)])
    error = capsys.readouterr().err
    assert exit_.value.code == 2
    assert error.count(f"{flag} must be") == 1
    assert "Traceback" not in error
