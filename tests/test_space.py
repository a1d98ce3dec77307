"""The Hugging Face Space's files (deploy.space): what is in them, their checks, and the app run
from that folder alone in a fresh virtual environment holding only the runtime requirements; the
split of runtime and development requirements."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from benchmarks.app_load import AppProcess
from deploy.space import MAX_PLAIN_BYTES, ROOT, build_space, check_space, main, space_files

DEV_ONLY = {"pytest", "playwright", "scikit-image", "pycocoevalcap", "hypothesis", "imageio", "transformers"}


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("space") / "space"
    build_space(folder)
    return folder


def _requirement_names(path: Path) -> set[str]:
    lines = (line.split(" #")[0].strip() for line in path.read_text().splitlines())
    return {Requirement(line).name.lower() for line in lines if line and not line.startswith(("#", "-"))}


def _front_matter(readme: Path) -> dict:
    _, block, _ = readme.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(block)


def test_the_space_holds_what_the_app_runs_on_and_nothing_else(space):
    files = space_files(space)
    assert {
        "app.py",
        "README.md",
        ".gitattributes",
        "requirements.txt",
        "packages.txt",
        "captioner/__init__.py",
        "captioner/data/concept_words.csv",
        "captioner/decoders/soft_attention/fused_decoder.cpp",
        "checkpoints/captioner.safetensors",
        "checkpoints/captioner.metrics.json",
        "demo/README.md",
        "demo/chelsea.jpg",
        "demo/chelsea_pan.mp4",
    } <= set(files)
    assert not [name for name in files if name.split("/")[0] in {"tests", "training", "benchmarks", "docs", "deploy"}]
    assert not [name for name in files if "__pycache__" in name or name.startswith("demo/outside_flickr8k")]
    assert (space / "requirements.txt").read_bytes() == (ROOT / "requirements.txt").read_bytes()
    assert check_space(space) == []


def test_the_space_readme_configures_a_gradio_space(space):
    config = _front_matter(space / "README.md")
    assert config["sdk"] == "gradio" and (space / config["app_file"]).is_file()
    assert config["python_version"] == "3.11"  # the Hub's default, 3.10, is older than pyproject's floor
    assert f"gradio=={config['sdk_version']}" in (space / "requirements.txt").read_text()
    text = (space / "README.md").read_text(encoding="utf-8")
    assert "## Data terms and citation" in text and "](docs/" not in text  # no links to files the Space lacks


def test_runtime_requirements_hold_no_development_packages():
    runtime = _requirement_names(ROOT / "requirements.txt")
    development = _requirement_names(ROOT / "requirements-dev.txt")
    assert not runtime & DEV_ONLY
    assert DEV_ONLY - {"transformers"} <= development
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()


def test_ci_runs_exactly_the_readme_test_command():
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert "pip install -r requirements-dev.txt && python -m pytest" in command
    assert f"```bash\n{command}\n```" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_check_names_a_large_plain_file_a_binary_and_a_bad_front_matter(space, tmp_path):
    broken = tmp_path / "space"
    shutil.copytree(space, broken)
    (broken / "weights.bin").write_bytes(b"\1" * (MAX_PLAIN_BYTES + 1))
    (broken / "demo" / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    readme = broken / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace("sdk: gradio", "sdk: docker"), encoding="utf-8")
    (broken / "requirements.txt").write_text("-r requirements-dev.txt\ngradio==6.31.0\n")
    problems = check_space(broken)
    assert any(p.startswith("weights.bin: 10.0 MB") for p in problems)
    assert any(p.startswith("demo/cat.png: a binary file") for p in problems)
    assert any("sdk: docker" in p for p in problems)
    assert any(p.startswith("requirements.txt:1:") for p in problems)
    assert len(problems) == 4


def test_a_dry_run_builds_checks_and_uploads_nothing(tmp_path, capsys):
    assert main(["--dry-run", "--out", str(tmp_path / "space")]) == 0
    out = capsys.readouterr().out
    assert "LFS    checkpoints/captioner.safetensors" in out and "dry run, nothing uploaded" in out
    assert main(["--dry-run", "--out", str(tmp_path / "space")]) == 1  # never writes into a full folder
    assert "is not empty" in capsys.readouterr().err


def test_an_unreachable_hub_is_a_clear_message(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    assert main(["--repo-id", "someone/captioner", "--token", "hf_none", "--out", str(tmp_path / "space")]) == 1
    assert f"nothing uploaded to the Space someone/captioner at {endpoint}" in capsys.readouterr().err


_MISSING_IMPORTS = """
import ast, importlib.util, pathlib, sys
names = set()
for path in pathlib.Path('.').rglob('*.py'):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split('.')[0])
print(' '.join(sorted(name for name in names if importlib.util.find_spec(name) is None)))
"""


@pytest.mark.slow
def test_the_space_folder_alone_serves_captions_in_a_fresh_environment(space, tmp_path, shipped):
    """A virtual environment with the Space's requirements.txt and nothing else (no system site
    packages, no PYTHONPATH to the repository) runs its app.py and its CLI from that folder."""
    venv = tmp_path / "venv"
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        install = subprocess.run(
            [python, "-m", "pip", "install", "-q", "-r", "requirements.txt"],
            cwd=space,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert install.returncode == 0, install.stderr[-3000:]
        print(f"\nfresh venv with the runtime requirements: {time.perf_counter() - started:.0f} s")

        env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"  # as activating it does: ninja for the C++ kernels
        env["TORCH_EXTENSIONS_DIR"] = str(tmp_path / "torch_extensions")  # compiled anew, as on a new Space
        missing = subprocess.run(
            [python, "-c", _MISSING_IMPORTS], cwd=space, env=env, capture_output=True, text=True, check=True
        )
        assert missing.stdout.split() == []  # every module the Space's code imports is installed

        chelsea = space / "demo" / "chelsea.jpg"
        expected = shipped.caption(chelsea).caption
        log = tmp_path / "app.log"
        server = AppProcess(threads=2, script=space / "app.py", python=python, env=env, log=log, startup_timeout=600)
        try:
            caption, *_ = server.caption(chelsea)
        finally:
            server.close()
        print(f"app start in the fresh venv (C++ kernels compiled): {server.startup_s:.0f} s")
        assert caption == expected and caption.strip()
        assert "native decoder kernels are unavailable" not in log.read_text(errors="replace")
        assert list((tmp_path / "torch_extensions").rglob("*.so"))

        cli = subprocess.run(
            [python, "-m", "captioner", "caption", "demo/chelsea.jpg"],
            cwd=space,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert cli.returncode == 0, cli.stderr[-3000:]
        assert cli.stdout.strip() == f"demo/chelsea.jpg\t{expected}"
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about 6 GB: never kept among pytest's temporary folders
