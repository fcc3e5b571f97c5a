"""The proxy image's build, replayed without Docker: stack/Dockerfile read with
``dockerfile-parse``, its ``.dockerignore`` with ``pathspec``, the files its ``COPY`` lines put
into the image laid out in a folder, and the ``pip install`` of its ``RUN`` line."""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dockerfile_parse import DockerfileParser
from pathspec import GitIgnoreSpec

from tests.support.nginx import REPO, STACK

DOCKERFILE = STACK / "Dockerfile"
# BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile (context: the repository root).
DOCKERIGNORE = STACK / "Dockerfile.dockerignore"
_NO_INSTALL = f"no `pip install` in a RUN line of {DOCKERFILE.relative_to(REPO)}"


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case: FROM, COPY, RUN...
    value: str  # the arguments, continuation lines joined


def instructions() -> list[Instruction]:
    """Every instruction but comments, in order."""
    parser = DockerfileParser(str(DOCKERFILE))
    return [
        Instruction(item["instruction"], item["value"])
        for item in parser.structure
        if item["instruction"] != "COMMENT"
    ]


def ignore_spec() -> GitIgnoreSpec:
    """The ignore file as Docker reads it: every pattern relative to the context root (gitignore
    patterns without a slash match at any depth, so each is anchored with a leading ``/``), and
    the last pattern that matches a path decides."""
    patterns = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = (True, line[1:]) if line.startswith("!") else (False, line)
        anchored = "/" + pattern.lstrip("/")
        patterns.append(("!" if negate else "") + anchored)
    return GitIgnoreSpec.from_lines(patterns)


def _copy_arguments(value: str) -> tuple[list[str], str]:
    """(sources, destination) of a COPY, in shell or JSON form, flags (``--chown``...) dropped."""
    words = json.loads(value) if value.lstrip().startswith("[") else shlex.split(value)
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1], paths[-1]


def lay_out(root: Path) -> Path:
    """Write under ``root`` (standing for the image's ``/``) what the COPY lines before the
    ``pip install`` put into the image from the build context (the repository, ignore rules
    applied); returns the WORKDIR that the install runs in.

    A source with nothing left in the context fails as ``docker build`` does."""
    ignored = ignore_spec()
    workdir = PurePosixPath("/")
    for instruction in instructions():
        if instruction.name == "RUN" and _pip_install(instruction.value) is not None:
            return root / workdir.relative_to("/")
        if instruction.name == "WORKDIR":
            workdir = workdir / instruction.value
        if instruction.name != "COPY":
            continue
        sources, dest = _copy_arguments(instruction.value)
        target = workdir / dest
        into_dir = dest.endswith("/") or len(sources) > 1
        for source in sources:
            files = _context_files(source, ignored)
            assert files, (
                f"COPY {source}: not found in the build context or excluded by "
                f"{DOCKERIGNORE.relative_to(REPO)}"
            )
            base = REPO / source
            for file in files:
                if base.is_dir():
                    image_path = target / file.relative_to(base).as_posix()
                elif into_dir:
                    image_path = target / file.name
                else:
                    image_path = target
                out = root / image_path.relative_to("/")
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, out)
    raise AssertionError(_NO_INSTALL)


def _context_files(source: str, ignored: GitIgnoreSpec) -> list[Path]:
    """The files of the build context under ``source`` (a file or a folder)."""
    base = REPO / source
    candidates = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
    return [
        p
        for p in candidates
        if p.is_file() and not ignored.match_file(p.relative_to(REPO).as_posix())
    ]


def pip_install_arguments() -> list[str]:
    """The arguments of the ``pip install`` in the RUN lines (``['.[proxy]']``)."""
    for instruction in instructions():
        found = _pip_install(instruction.value) if instruction.name == "RUN" else None
        if found is not None:
            return found
    raise AssertionError(_NO_INSTALL)


def _pip_install(command_line: str) -> list[str] | None:
    """The arguments of the ``pip install`` among a RUN line's ``&&``/``;`` commands."""
    command: list[str] = []
    for word in [*shlex.split(command_line), "&&"]:
        if word not in ("&&", ";"):
            command.append(word)
            continue
        if command[:2] == ["pip", "install"]:
            return command[2:]
        command = []
    return None
