from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
from media_helpers import mentions_dog, write_clip

from captioner.cli import main


@pytest.mark.slow
def test_cli_captions_images_and_videos_and_reports_bad_paths(tmp_path, dog_photo, capsys):
    clip = write_clip(tmp_path / "clip.mp4", dog_photo)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    paths = [str(dog_photo), str(tmp_path / "missing.jpg"), str(tmp_path / "broken.png"), str(clip)]
    code = main(["caption", "--json", "--top-k", "3", *paths])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert [line["path"] for line in lines] == paths
    assert mentions_dog(lines[0]["caption"]) and mentions_dog(lines[3]["caption"])
    assert all(len(step["alternatives"]) == 3 for step in lines[0]["steps"])
    assert "no such file" in lines[1]["error"] and "not an image" in lines[2]["error"]
    assert "missing.jpg" in err and "broken.png" in err


def test_cli_plain_output_and_beam(dog_photo, capsys):
    assert main(["caption", "--beam", "3", str(dog_photo)]) == 0
    path, caption = capsys.readouterr().out.strip().split("\t")
    assert path == str(dog_photo) and mentions_dog(caption)


def test_cli_missing_checkpoint_is_a_clear_error(tmp_path, dog_photo, capsys):
    assert main(["caption", "--checkpoint", str(tmp_path / "none.safetensors"), str(dog_photo)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_sampling_with_a_seed_is_repeatable(dog_photo, capsys):
    arguments = ["caption", "--sample", "--temperature", "0.8", "--top-p", "0.9", "--seed", "5", str(dog_photo)]
    assert main(arguments) == 0
    first = capsys.readouterr().out
    assert main(arguments) == 0
    assert capsys.readouterr().out == first and first.strip()


@pytest.mark.slow
def test_cli_captions_the_photos_and_videos_in_a_folder(tmp_path, dog_photo, capsys):
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "b_dog.JPG").write_bytes(dog_photo.read_bytes())  # extensions in any case
    write_clip(folder / "a_clip.mp4", dog_photo)
    (folder / "notes.txt").write_text("not a picture")
    (folder / "nested").mkdir()
    (tmp_path / "empty").mkdir()
    code = main(["caption", "--json", str(folder), str(tmp_path / "empty")])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # the empty folder
    assert [line["path"] for line in lines] == [
        str(folder / "a_clip.mp4"),
        str(folder / "b_dog.JPG"),
        str(tmp_path / "empty"),
    ]
    assert mentions_dog(lines[0]["caption"]) and mentions_dog(lines[1]["caption"])
    assert "no photos or videos in this folder" in lines[2]["error"]


def _cli(*arguments: str, **options) -> subprocess.CompletedProcess:
    """``python -m captioner caption ARGUMENTS`` in a process of its own, through a shell."""
    command = " ".join([shlex.quote(sys.executable), "-m captioner caption", *arguments])
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300, **options)


@pytest.mark.slow
def test_a_file_name_with_a_newline_stays_on_one_line(tmp_path, dog_photo, capsys):
    odd = tmp_path / "two\nlines.jpg"
    shutil.copy(dog_photo, odd)
    assert main(["caption", str(odd), str(tmp_path / "gone\n.jpg")]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 and "two\\nlines.jpg\t" in captured.out
    assert captured.err.count("\n") == 1 and "gone\\n.jpg: no such file" in captured.err


def test_a_fifo_is_reported_as_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert main(["caption", str(fifo)]) == 1
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.slow
def test_output_piped_into_head_ends_quietly(dog_photo):
    done = _cli(*[shlex.quote(str(dog_photo))] * 40, "| head -1; exit ${PIPESTATUS[0]}", executable="/bin/bash")
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    assert done.returncode == 1


@pytest.mark.slow
def test_closed_standard_output_is_an_error_not_a_silent_success(dog_photo):
    done = _cli(shlex.quote(str(dog_photo)), ">&-")
    assert done.returncode == 2
    assert "standard output is closed" in done.stderr


def test_cli_names_a_required_concept_and_refuses_a_bad_probability(capsys):
    cheetah = os.path.join(os.path.dirname(__file__), "..", "demo", "outside_flickr8k", "cheetah_running.jpg")
    assert main(["caption", "--require-concepts", "0.7", "--concepts", cheetah]) == 0
    _, caption, concepts = capsys.readouterr().out.strip().split("\t")
    assert "cheetah" in caption.split() and "→ cheetah" in concepts
    assert main(["caption", "--require-concepts", "0", cheetah]) == 0
    assert "cheetah" not in capsys.readouterr().out.strip().split("\t")[1].split()
    with pytest.raises(SystemExit) as refused:
        main(["caption", "--require-concepts", "1.5", cheetah])
    assert refused.value.code == 2 and "--require-concepts must be" in capsys.readouterr().err
    assert main(["caption", "--require-concepts", "0.5", "--sample", cheetah]) == 2
    assert "not --sample" in capsys.readouterr().err
