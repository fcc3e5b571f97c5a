"""The ``cached-tei`` command: ``serve`` the proxy, ``embed`` a file, ``cache`` maintenance.

Settings come from ``CACHED_TEI_*`` (and ``.env``); every setting but the secrets also has a
flag, which wins. ``embed`` and ``cache`` need only the base install; ``serve`` needs
``cached-tei[proxy]``. Errors are one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from .. import __version__
from ..errors import CachedTEIError
from ..logs import LogFormat, LogSettings
from ..settings import FACE_SETTINGS, CachedTEISettings
from .options import (
    DEFAULT_FIELD,
    EMBED_DEFAULTS,
    FLAG_PREFIXES,
    STORE_SETTINGS,
    VERIFY_SETTINGS,
    CLIError,
    add_setting_flags,
    configure_logging,
    log_settings_from_args,
    tell,
)

PROG = "cached-tei"
# Texts per engine call while embedding a file.
DEFAULT_CHUNK = 1024


def _command(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command whose module (and so the engine) is imported only when it runs: --help and
    wrong command lines stay fast."""

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(f".{module}", __name__), name)(args))

    return run


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- the parser
def _common(
    *,
    only: Collection[str] | None = None,
    refused: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> _Parser:
    """What a command shares: -v, the engine settings it uses (``only``, or all; ``refused``
    ones are parsed, not shown, for the command to refuse by name), the logging settings."""
    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="log what the engine does (INFO) to stderr"
    )
    add_setting_flags(
        common,
        CachedTEISettings,
        "setting_",
        "settings (each flag overrides its CACHED_TEI_* variable; keys only from the environment)",
        only=only,
        refused=refused,
        defaults=defaults,
    )
    add_setting_flags(common, LogSettings, "log_", "logging")
    return common


def build_parser() -> argparse.ArgumentParser:
    from ..proxy.settings import ProxySettings

    parser = _Parser(
        prog=PROG,
        description="Cached text embeddings from Hugging Face TEI: a TEI-compatible caching "
        "proxy, a file embedder, and cache maintenance.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        parents=[
            _common(
                only=CachedTEISettings.model_fields.keys() - FACE_SETTINGS, refused=FACE_SETTINGS
            )
        ],
        help="run the TEI-compatible caching proxy",
        description="Serve TEI's API (POST /embed, /, /v1/embeddings; GET /info, /health, "
        "/metrics; other TEI routes forwarded) with the cache in front of CACHED_TEI_URL. "
        "Needs cached-tei[proxy]. API keys: CACHED_TEI_PROXY_API_KEYS=key1,key2. What changes "
        "a vector (normalize, truncate, prompt_name, dimensions) is per request, as in TEI's API.",
    )
    add_setting_flags(
        serve,
        ProxySettings,
        "proxy_",
        "proxy (each flag overrides its CACHED_TEI_PROXY_* variable)",
    )
    serve.set_defaults(parser=serve, run=_command("serve", "run_serve"))

    embed = commands.add_parser(
        "embed",
        parents=[_common(defaults=EMBED_DEFAULTS)],
        help="embed a text or JSONL file into JSONL or .npy",
        description="Embed every line of INPUT (or a string field of each JSONL object) through "
        "the cache, streaming, and write JSONL (input object + 'embedding') or a float32 .npy "
        "(row i = i-th non-empty line). Warms the cache for a corpus.",
    )
    embed.add_argument("input", metavar="INPUT", help="a text file, a .jsonl file, or - for stdin")
    embed.add_argument(
        "-o",
        "--output",
        default="-",
        help="output file (.npy or JSONL); - for stdout (default %(default)s)",
    )
    embed.add_argument(
        "--input-format",
        choices=("auto", "text", "jsonl"),
        default="auto",
        help="auto: .jsonl/.ndjson are JSONL, anything else one text per line "
        "(default %(default)s)",
    )
    embed.add_argument(
        "--field", help=f"the JSONL field holding the text (default {DEFAULT_FIELD})"
    )
    embed.add_argument(
        "--format",
        choices=("auto", "jsonl", "npy"),
        default="auto",
        help="output format; auto: .npy by suffix, else JSONL (default %(default)s)",
    )
    embed.add_argument(
        "--kind",
        choices=("document", "query"),
        default="document",
        help="apply the document or query prompt/instruction (default %(default)s)",
    )
    embed.add_argument(
        "--sparse",
        action="store_true",
        help="sparse (SPLADE) vectors from CACHED_TEI_SPARSE_URL (--sparse-url): JSONL with "
        "'embedding': {'indices': [...], 'values': [...]}",
    )
    embed.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK,
        help="texts per engine call (default %(default)s)",
    )
    embed.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary line"
    )
    embed.set_defaults(parser=embed, run=_command("embed", "run_embed"))

    cache = commands.add_parser(
        "cache", help="inspect or clean the cache", description="Inspect or clean the Qdrant cache."
    )
    cache_commands = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    stats = cache_commands.add_parser(
        "stats", parents=[_common(only=STORE_SETTINGS)], help="collections and entry counts"
    )
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(parser=stats, run=_command("cache", "run_cache_stats"))
    prune = cache_commands.add_parser(
        "prune",
        parents=[_common(only=STORE_SETTINGS | {"ttl"})],
        help="delete entries older than the TTL (--ttl)",
    )
    prune.set_defaults(parser=prune, run=_command("cache", "run_cache_prune"))
    clear = cache_commands.add_parser(
        "clear",
        parents=[_common(only=STORE_SETTINGS)],
        help="delete every cache collection under the prefix",
    )
    clear.add_argument("-y", "--yes", action="store_true", help="do not ask")
    clear.set_defaults(parser=clear, run=_command("cache", "run_cache_clear"))
    verify = cache_commands.add_parser(
        "verify",
        parents=[_common(only=VERIFY_SETTINGS)],
        help="re-embed a sample of entries through TEI and compare (drift, corruption)",
        description="Check a random sample of each collection: corruption visible without the "
        "text (size, finite values, unit length), and, for entries stored with their text "
        "(store_text=True), the key and TEI's vector today. Exit 0: all hold; 3: some "
        "drifted; 4: some are corrupt.",
    )
    verify.add_argument(
        "--sample", type=int, default=100, help="entries per collection (default 100)"
    )
    verify.set_defaults(parser=verify, run=_command("verify", "run_cache_verify"))
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
            for error in exc.errors()
        )
        text = f"invalid setting: {problems}"
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or exc}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _flag_errors(args: argparse.Namespace, exc: ValidationError) -> str | None:
    """argparse's message for settings refused because of flags given on the command line;
    None when a refused value came from elsewhere (the environment, ``.env``)."""
    given = {
        dest.split("_", 1)[1]
        for dest, value in vars(args).items()
        if dest.startswith(FLAG_PREFIXES) and value is not None
    }
    errors = exc.errors()
    if not errors or any(not error["loc"] or error["loc"][0] not in given for error in errors):
        return None
    return "; ".join(
        f"argument --{str(error['loc'][0]).replace('_', '-')}: {error['msg']}" for error in errors
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cached-tei`` entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.log_format = "text"
    try:
        args.log_format = log_settings_from_args(args).log_format
        configure_logging("INFO" if args.verbose else "WARNING", args.log_format)
        return int(args.run(args))
    except KeyboardInterrupt:
        _error(args.log_format, "interrupted")
        return 130
    except ValidationError as exc:
        flags = _flag_errors(args, exc)
        if flags:
            args.parser.error(flags)  # a bad value on the command line: exit 2, like argparse
        _error(args.log_format, _one_line(exc))
        return 1
    except (CLIError, CachedTEIError, OSError) as exc:
        _error(args.log_format, _one_line(exc))
        return 1


def _error(log_format: LogFormat, text: str) -> None:
    tell(log_format, text if log_format == "json" else f"{PROG}: error: {text}", logging.ERROR)
