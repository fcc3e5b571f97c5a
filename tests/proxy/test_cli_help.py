"""Every ``cached-tei`` help text: only the options the command uses, each described, each
with the default the command really runs with."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cached_tei import CachedTEISettings
from cached_tei.cli import main
from cached_tei.cli.options import SECRET_FIELDS
from cached_tei.logs import LogSettings
from cached_tei.proxy import ProxySettings

# What changes a vector, and the cache flags: per request in TEI's API, so not serve's.
PER_REQUEST = {
    "--normalize",
    "--truncate",
    "--truncation-direction",
    "--dimensions",
    "--query-prompt-name",
    "--document-prompt-name",
    "--query-instruction",
    "--document-instruction",
    "--read-cache",
    "--write-cache",
}
STORE = {
    "--qdrant-url",
    "--qdrant-path",
    "--qdrant-prefer-grpc",
    "--qdrant-timeout",
    "--collection-prefix",
}
# Settings fields that have no description yet (they are being written); the merge fills them.
MISSING_DESCRIPTIONS = {
    "--normalize",
    "--truncation-direction",
    "--query-prompt-name",
    "--document-prompt-name",
    "--qdrant-path",
    "--qdrant-prefer-grpc",
    "--qdrant-replication-factor",
    "--collection-prefix",
}
pytestmark = pytest.mark.usefixtures("logging_restored")
_OPTION = re.compile(r"^  (?:-\w(?: \S+)?, )?(--[\w-]+)(?: \S+)?(?:  +(.*))?$")
_DEFAULT = re.compile(r"\(default ([^)]*)\) \[env (\w+)\]$")


def flags(model: Any) -> set[str]:
    return {
        f"--{name.replace('_', '-')}" for name in model.model_fields if name not in SECRET_FIELDS
    }


ENGINE = flags(CachedTEISettings)
LOG = flags(LogSettings)
COMMANDS: dict[tuple[str, ...], set[str]] = {
    (): {"--help", "--version"},
    ("serve",): {"--help", "--verbose"} | (ENGINE - PER_REQUEST) | LOG | flags(ProxySettings),
    ("embed",): {"--help", "--verbose", "--output", "--input-format", "--field", "--format"}
    | {"--kind", "--sparse", "--chunk-size", "--quiet"}
    | ENGINE
    | LOG,
    ("cache",): {"--help"},
    ("cache", "stats"): {"--help", "--verbose", "--json"} | STORE | LOG,
    ("cache", "prune"): {"--help", "--verbose", "--ttl"} | STORE | LOG,
    ("cache", "clear"): {"--help", "--verbose", "--yes"} | STORE | LOG,
}


@pytest.fixture(autouse=True)
def _unwrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse wraps at $COLUMNS, also inside paths at hyphens: one line per option."""
    monkeypatch.setenv("COLUMNS", "1000")


def options(text: str) -> dict[str, str]:
    """``{--flag: its help, lines joined}`` from argparse's output."""
    found: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = _OPTION.match(line)
        if match:
            current = match.group(1)
            found[current] = match.group(2) or ""
        elif current is not None and line.startswith("    "):
            found[current] = f"{found[current]} {line.strip()}".strip()
        else:
            current = None
    return found


def shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "empty" if value == "" else str(value)


def help_of(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", list(COMMANDS), ids=lambda c: " ".join(c) or "cached-tei")
def test_help_shows_what_the_command_uses_described_with_its_real_default(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_of(command, capsys)
    assert "PydanticUndefined" not in text and "(default )" not in text
    assert "None" not in text  # Python's word; a flag is unset
    found = options(text)
    assert set(found) == COMMANDS[command]

    runs_with = {
        f"--{name.replace('_', '-')}": shown(value)
        for settings in (CachedTEISettings(), ProxySettings(), LogSettings())
        for name, value in settings
    }
    if command == ("embed",):
        runs_with["--lru-bytes"] = "0"  # a corpus is read once: embed runs without the LRU
    undescribed = set()
    for flag, described in found.items():
        assert described, f"{flag} has no help"
        default = _DEFAULT.search(described)
        if flag in runs_with:
            assert default is not None, f"{flag}: {described}"
            assert default.group(1) == runs_with[flag], f"{flag}: {described}"
            if not described[: default.start()].strip():
                undescribed.add(flag)
    assert undescribed <= MISSING_DESCRIPTIONS


def test_the_defaults_shown_are_the_real_ones(capsys: pytest.CaptureFixture[str]) -> None:
    serve, embed = options(help_of(("serve",), capsys)), options(help_of(("embed",), capsys))
    assert "(default 67108864) [env CACHED_TEI_LRU_BYTES]" in serve["--lru-bytes"]
    assert "(default 0) [env CACHED_TEI_LRU_BYTES]" in embed["--lru-bytes"]
    path = CachedTEISettings().qdrant_path
    assert embed["--qdrant-path"].endswith(f"(default {path}) [env CACHED_TEI_QDRANT_PATH]")
    assert str(path).endswith("xdg-cache/cached-tei/qdrant")  # this test's own cache home
    assert embed["--ttl"].startswith("Seconds an entry is served; unset = forever")
    assert "(default empty)" in embed["--query-instruction"]
    own = ("--output", "--input-format", "--field", "--format", "--kind", "--chunk-size")
    assert [embed[flag].rsplit(" (default ", 1)[1] for flag in own] == [
        "-)",
        "auto)",
        "text)",
        "auto)",
        "document)",
        "1024)",
    ]


def test_serve_refuses_per_request_settings_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--normalize", "false", "--query-instruction", "query: "])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "cached-tei serve: error: --normalize, --query-instruction: cached-tei serve takes "
        "these per request, as TEI's API does: send normalize, truncate"
    )
    assert line.endswith("(see cached-tei serve --help)")


def test_serve_ignores_per_request_variables_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cached_tei.proxy import server

    served = []
    monkeypatch.setattr(server, "serve", lambda settings, *_: served.append(settings))
    monkeypatch.setenv("CACHED_TEI_NORMALIZE", "false")
    monkeypatch.setenv("CACHED_TEI_QUERY_INSTRUCTION", "query: ")
    assert main(["serve", "--tei-url", "http://127.0.0.1:9"]) == 0
    assert len(served) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if "ignored" in line]
    assert line.endswith(
        "CACHED_TEI_NORMALIZE, CACHED_TEI_QUERY_INSTRUCTION ignored: cached-tei serve takes "
        "these per request, as TEI's API does: send normalize, truncate, truncation_direction, "
        "prompt_name and dimensions in each request's JSON body, an instruction as part of the "
        "text, and 'Cache-Control: no-cache' or 'no-store' for the cache"
    )
