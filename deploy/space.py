"""The demo as a Hugging Face Space: build the files it runs on, check them, upload them.

    python -m deploy.space --repo-id <user>/<name>        # create the Space if needed, upload
    python -m deploy.space --dry-run --out space          # build and check only; upload nothing

The repository's own history cannot be pushed to a Space: it holds earlier checkpoints as plain
git files over the Hub's 10 MB limit. This uploads one snapshot of exactly the files the demo
needs through ``huggingface_hub``, which sends large and binary files through LFS by itself.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import yaml
from huggingface_hub import HfApi, SpaceCard
from packaging.requirements import InvalidRequirement, Requirement

__all__ = ["LFS_PATTERNS", "MAX_PLAIN_BYTES", "build_space", "check_space", "main", "space_files", "space_readme"]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "captioner"  # copied whole: its modules, data tables and C++ source
FILES = (
    "app.py",
    "requirements.txt",  # the runtime requirements only
    "packages.txt",  # g++ for the decoder's C++ kernels
    "checkpoints/captioner.safetensors",
    "checkpoints/captioner.metrics.json",
    "demo/README.md",  # the example media's sources and licences
)
EXAMPLES = ("demo/*.jpg", "demo/*.mp4")  # what app.py offers as examples
LFS_PATTERNS = ("*.safetensors", "*.mp4", "*.jpg")
MAX_PLAIN_BYTES = 10_000_000  # the Hub refuses plain (non-LFS) git files over 10 MB
README_SECTIONS = ("Limitations", "Data terms and citation")  # of the project's README, kept on the Space
_LOCAL_LINK = re.compile(r"\[([^\]]+)\]\((?!https?://)[^)]*\)")  # links into docs/, which the Space lacks
_INCLUDES = ("-r", "--requirement", "-c", "--constraint")


def space_readme(project_readme: str) -> str:
    """The Space's README: the project README's front matter (the Space's configuration), its
    introduction and its limitations and data terms, with links to files the Space lacks unlinked."""
    card = SpaceCard(project_readme)
    parts = re.split(r"^(?=## )", card.text.strip(), flags=re.MULTILINE)
    sections = {part.splitlines()[0][3:].strip(): part.strip() for part in parts[1:]}
    missing = [name for name in README_SECTIONS if name not in sections]
    if missing:
        raise ValueError(f"README.md has no section {', '.join(repr(f'## {name}') for name in missing)}")
    note = (
        "This Space runs `app.py` on the shipped checkpoint. It is uploaded with `python -m deploy.space` "
        "from the project's repository, whose README covers the library, the command line and training."
    )
    body = "\n\n".join([parts[0].strip(), note, *(sections[name] for name in README_SECTIONS)])
    card.text = "\n" + _LOCAL_LINK.sub(r"\1", body) + "\n"
    return card.content


def build_space(out: Path, *, root: Path = ROOT) -> list[str]:
    """Write the Space's files into ``out`` (created if needed; must be empty) and return their paths."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: give a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / PACKAGE, out / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]", "*.so"))
    sources = [root / name for name in FILES] + [path for pattern in EXAMPLES for path in sorted(root.glob(pattern))]
    for source in sources:
        if not source.is_file():
            raise FileNotFoundError(f"{source} is missing; the Space needs it")
        target = out / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    readme = space_readme((root / "README.md").read_text(encoding="utf-8"))
    (out / "README.md").write_text(readme, encoding="utf-8")
    lfs_lines = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)
    (out / ".gitattributes").write_text(lfs_lines, encoding="utf-8")
    return space_files(out)


def space_files(folder: Path) -> list[str]:
    """Every file under ``folder`` as a sorted POSIX path relative to it."""
    return sorted(path.relative_to(folder).as_posix() for path in Path(folder).rglob("*") if path.is_file())


def _lfs_patterns(gitattributes: Path) -> list[str]:
    if not gitattributes.is_file():
        return []
    lines = (line.split() for line in gitattributes.read_text(encoding="utf-8").splitlines())
    return [fields[0] for fields in lines if fields and "filter=lfs" in fields[1:]]


def _in_lfs(name: str, patterns: Sequence[str]) -> bool:
    """Whether ``name`` matches a .gitattributes pattern (one without a slash matches the file name)."""
    return any(
        fnmatch.fnmatchcase(name if "/" in pattern else PurePosixPath(name).name, pattern.lstrip("/"))
        for pattern in patterns
    )


def _is_binary(path: Path) -> bool:
    with path.open("rb") as file:
        return b"\0" in file.read(8000)  # git's own test


def _pinned(requirements: list[Requirement], name: str) -> str | None:
    for requirement in requirements:
        specifiers = list(requirement.specifier)
        if requirement.name.lower() == name and len(specifiers) == 1 and specifiers[0].operator == "==":
            return specifiers[0].version
    return None


def _check_requirements(folder: Path) -> tuple[list[str], list[Requirement]]:
    path = folder / "requirements.txt"
    if not path.is_file():
        return ["requirements.txt is missing"], []
    problems, requirements = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.split()[0] in _INCLUDES:
            problems.append(f"requirements.txt:{number}: '{line}' names another file, which the Space does not have")
        elif not line.startswith("-"):
            try:
                requirements.append(Requirement(line))
            except InvalidRequirement as error:
                problems.append(f"requirements.txt:{number}: {error}")
    return problems, requirements


def _check_card(folder: Path, requirements: list[Requirement]) -> list[str]:
    readme = folder / "README.md"
    if not readme.is_file():
        return ["README.md is missing; its front matter configures the Space"]
    try:
        data = SpaceCard(readme.read_text(encoding="utf-8")).data
    except (ValueError, yaml.YAMLError) as error:
        return [f"README.md: the front matter is not a YAML mapping ({error})"]
    problems = []
    if data.sdk != "gradio":
        problems.append(f"README.md: front matter has sdk: {data.sdk}, this app needs sdk: gradio")
    if not data.app_file or not (folder / data.app_file).is_file():
        problems.append(f"README.md: front matter's app_file {data.app_file!r} is not in the Space")
    gradio = _pinned(requirements, "gradio")
    if gradio and str(data.sdk_version) != gradio:
        problems.append(
            f"README.md: front matter's sdk_version {data.sdk_version} differs from requirements.txt's gradio=={gradio}"
        )
    return problems


def check_space(folder: Path) -> list[str]:
    """What would stop ``folder`` from being uploaded and run as a Gradio Space: one message per
    problem, none when it is ready."""
    folder = Path(folder)
    patterns = _lfs_patterns(folder / ".gitattributes")
    problems = []
    for name in space_files(folder):
        if _in_lfs(name, patterns):
            continue
        size = (folder / name).stat().st_size
        if size > MAX_PLAIN_BYTES:
            problems.append(
                f"{name}: {size / 1e6:.1f} MB outside .gitattributes' LFS patterns; the Hub's limit is 10 MB"
            )
        elif _is_binary(folder / name):
            problems.append(f"{name}: a binary file outside .gitattributes' LFS patterns")
    requirement_problems, requirements = _check_requirements(folder)
    return problems + requirement_problems + _check_card(folder, requirements)


def _upload(folder: Path, repo_id: str, *, token: str | None, private: bool) -> int:
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private or None, exist_ok=True)
        api.upload_folder(
            repo_id=url.repo_id,
            repo_type="space",
            folder_path=folder,
            commit_message="Upload the demo (python -m deploy.space)",
            delete_patterns="*",  # the Space holds exactly these files afterwards
        )
    except Exception as error:  # the Hub's refusals and an unreachable network alike: say so and stop
        print(f"error: nothing uploaded to the Space {repo_id} at {api.endpoint}: {error}", file=sys.stderr)
        return 1
    print(f"uploaded; the Space builds and starts at {url}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.space", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo-id", help="the Space, <user or organisation>/<name>; created if it does not exist")
    parser.add_argument("--out", type=Path, help="build the files here (a new or empty folder; default: temporary)")
    parser.add_argument("--dry-run", action="store_true", help="build and check the files, upload nothing")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--token", help="a write token (default: the one `hf auth login` saved, or $HF_TOKEN)")
    args = parser.parse_args(argv)
    if not args.repo_id and not args.dry_run:
        parser.error("--repo-id is required unless --dry-run")
    with tempfile.TemporaryDirectory(prefix="space-") as scratch:
        folder = args.out or Path(scratch) / "space"
        try:
            files = build_space(folder)
        except (OSError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        patterns = _lfs_patterns(folder / ".gitattributes")
        for name in files:
            route = "LFS" if _in_lfs(name, patterns) else "plain"
            print(f"{(folder / name).stat().st_size / 1e6:9.3f} MB  {route:5}  {name}")
        problems = check_space(folder)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if problems:
            return 1
        if args.dry_run:
            print(f"{len(files)} files ready{f' in {folder}' if args.out else ''}; dry run, nothing uploaded")
            return 0
        return _upload(folder, args.repo_id, token=args.token, private=args.private)


if __name__ == "__main__":
    sys.exit(main())
