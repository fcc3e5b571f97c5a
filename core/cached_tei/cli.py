"""The ``cached-tei`` command: ``serve`` the proxy, ``embed`` a file, ``cache stats|prune|clear``.

Settings come from ``CACHED_TEI_*`` (and ``.env``); every setting but the secrets also has a
flag, which wins. ``embed`` and ``cache`` need only the base install; ``serve`` needs
``cached-tei[proxy]``. Errors are one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import BaseModel, ValidationError

from . import __version__
from .engine import EmbedResult, Engine
from .errors import CachedTEIError
from .keys import EmbedOptions
from .settings import CachedTEISettings

log = logging.getLogger(__name__)

PROG = "cached-tei"
# Texts per engine call while embedding a file, and calls in flight at once.
DEFAULT_CHUNK = 1024
WINDOW = 2


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- settings flags
_SECRET_FIELDS = frozenset({"api_key", "qdrant_api_key", "api_keys"})


def _env_name(model: type[BaseModel], name: str) -> str:
    if model is CachedTEISettings and name == "tei_url":
        return "CACHED_TEI_URL"
    prefix = model.model_config.get("env_prefix", "")
    return f"{prefix}{name}".upper()


def _add_setting_flags(
    parser: argparse.ArgumentParser, model: type[BaseModel], dest_prefix: str, title: str
) -> None:
    """One ``--flag VALUE`` per field of a settings class (secrets stay in the environment)."""
    group = parser.add_argument_group(title)
    for name, field in model.model_fields.items():
        if name in _SECRET_FIELDS:
            continue
        description = (field.description or "").rstrip(".")
        default = field.get_default(call_default_factory=False)
        shown = "" if default is None or callable(default) else f" (default {default})"
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"{dest_prefix}{name}",
            metavar="VALUE",
            default=None,
            help=f"{description}{shown} [env {_env_name(model, name)}]".strip().replace("%", "%%"),
        )


def _overrides(args: argparse.Namespace, dest_prefix: str) -> dict[str, Any]:
    return {
        key[len(dest_prefix) :]: value
        for key, value in vars(args).items()
        if key.startswith(dest_prefix) and value is not None
    }


def _settings(args: argparse.Namespace) -> CachedTEISettings:
    return CachedTEISettings(**_overrides(args, "setting_"))


def _proxy_settings(args: argparse.Namespace) -> Any:
    from .proxy.settings import ProxySettings

    return ProxySettings(**_overrides(args, "proxy_"))


# ---------------------------------------------------------------------------- serve
def _serve(args: argparse.Namespace) -> int:
    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if not _importable(m)]
    if missing:
        raise CLIError(
            f"cached-tei serve needs the proxy extra ({', '.join(missing)} not installed): "
            "pip install 'cached-tei[proxy]'"
        )
    settings = _settings(args)
    proxy = _proxy_settings(args)
    _configure_logging(proxy.log_level.upper())
    from .proxy.server import serve

    serve(settings, proxy)
    return 0


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------- embed
@dataclass
class _Source:
    """Texts from a file (or stdin): one per line, or a string field of each JSONL object.

    Lines are split on ``\\n`` only; empty lines are skipped.
    """

    path: Path | None
    jsonl: bool
    field: str

    @classmethod
    def of(cls, name: str, input_format: str, field: str) -> _Source:
        path = None if name == "-" else Path(name)
        if path is not None and not path.is_file():
            raise CLIError(f"no such file: {name}")
        if input_format == "auto":
            jsonl = path is not None and path.suffix.lower() in (".jsonl", ".ndjson")
        else:
            jsonl = input_format == "jsonl"
        return cls(path, jsonl, field)

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "<stdin>"

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        if self.path is None:
            opened: Any = nullcontext(sys.stdin.buffer)
        else:
            opened = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        with opened as handle:
            for number, raw in enumerate(handle, 1):
                line = raw.rstrip(b"\n")
                if line.endswith(b"\r"):
                    line = line[:-1]
                if line:
                    yield number, line

    def count(self) -> int | None:
        """How many records there are (None for stdin, which can be read once)."""
        return None if self.path is None else sum(1 for _ in self._lines())

    def records(self) -> Iterator[tuple[dict[str, Any] | None, str]]:
        from .proxy.jsonio import loads

        for number, line in self._lines():
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CLIError(f"{self.name} line {number} is not UTF-8 ({exc.reason})") from None
            if not self.jsonl:
                yield None, text
                continue
            try:
                record = loads(line)
            except ValueError as exc:
                raise CLIError(f"{self.name} line {number} is not JSON: {exc}") from None
            value = record.get(self.field) if isinstance(record, dict) else None
            if not isinstance(value, str) or not value:
                raise CLIError(
                    f"{self.name} line {number} has no non-empty string field {self.field!r} "
                    "(choose the field with --field)"
                )
            yield record, value


class _JSONLWriter:
    """One object per line: the input object (or ``{"text": ...}``) plus ``embedding``."""

    def __init__(self, target: str) -> None:
        from .proxy.jsonio import dumps

        self._dumps = dumps
        self._stdout = target == "-"
        # open until close(): the file is written chunk by chunk
        self._handle: IO[bytes] = (
            sys.stdout.buffer if self._stdout else open(target, "wb")  # noqa: SIM115
        )

    def write(
        self, records: Sequence[tuple[dict[str, Any] | None, str]], vectors: np.ndarray
    ) -> None:
        lines = []
        for (record, text), vector in zip(records, vectors):
            item = dict(record) if record is not None else {"text": text}
            item["embedding"] = vector
            lines.append(self._dumps(item))
        self._handle.write(b"\n".join(lines) + b"\n")

    def close(self, ok: bool) -> None:
        if self._stdout:
            self._handle.flush()
        else:
            self._handle.close()


class _NpyWriter:
    """A float32 ``(n, dim)`` array, written row block by row block into a memory map
    (or gathered in memory when the count is unknown), renamed into place on success."""

    def __init__(self, target: str, total: int | None) -> None:
        self._target = Path(target)
        self._partial = self._target.with_name(self._target.name + ".partial")
        self._total = total
        self._array: np.ndarray | None = None
        self._blocks: list[np.ndarray] = []
        self._row = 0

    def write(self, records: Sequence[Any], vectors: np.ndarray) -> None:
        if self._total is None:
            self._blocks.append(vectors)
            return
        if self._array is None:
            self._array = np.lib.format.open_memmap(
                self._partial, mode="w+", dtype=np.float32, shape=(self._total, vectors.shape[1])
            )
        self._array[self._row : self._row + len(vectors)] = vectors
        self._row += len(vectors)

    def close(self, ok: bool) -> None:
        if not ok:
            self._array = None
            self._partial.unlink(missing_ok=True)
            return
        if self._array is not None:
            self._array.flush()
            self._array = None
        else:
            blocks = self._blocks or [np.zeros((0, 0), dtype=np.float32)]
            with open(self._partial, "wb") as handle:
                np.save(handle, np.concatenate(blocks), allow_pickle=False)
        os.replace(self._partial, self._target)


def _chunks(
    records: Iterator[tuple[dict[str, Any] | None, str]], size: int
) -> Iterator[list[tuple[dict[str, Any] | None, str]]]:
    chunk: list[tuple[dict[str, Any] | None, str]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _embed(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if "lru_bytes" not in settings.model_fields_set:
        # A corpus is read once: an in-process LRU would only grow with it.
        settings = settings.model_copy(update={"lru_bytes": 0})
    source = _Source.of(args.input, args.input_format, args.field)
    output_format = args.format
    if output_format == "auto":
        output_format = "npy" if args.output.lower().endswith(".npy") else "jsonl"
    if output_format == "npy" and args.output == "-":
        raise CLIError("a .npy output needs a file name: -o vectors.npy")
    if args.chunk_size < 1:
        raise CLIError("--chunk-size must be at least 1")
    total = source.count()
    writer: _JSONLWriter | _NpyWriter = (
        _NpyWriter(args.output, total) if output_format == "npy" else _JSONLWriter(args.output)
    )
    options = EmbedOptions.from_settings(settings, args.kind)
    started = time.perf_counter()
    ok = False
    try:
        engine_stats = asyncio.run(
            _embed_file(settings, options, source, writer, total, args.chunk_size, args.quiet)
        )
        ok = True
    finally:
        writer.close(ok)
    elapsed = time.perf_counter() - started
    count = engine_stats.hits + engine_stats.misses + engine_stats.duplicates
    rate = count / elapsed if elapsed > 0 else 0.0
    print(
        f"embedded {count} texts in {elapsed:.2f} s ({rate:.0f} texts/s): "
        f"{engine_stats.hits} cache hits, {engine_stats.misses} computed by TEI, "
        f"{engine_stats.duplicates} repeated; wrote {args.output}",
        file=sys.stderr,
    )
    return 0


async def _embed_file(
    settings: CachedTEISettings,
    options: EmbedOptions,
    source: _Source,
    writer: _JSONLWriter | _NpyWriter,
    total: int | None,
    chunk_size: int,
    quiet: bool,
) -> Any:
    from tqdm import tqdm

    engine = Engine(settings)
    bar = tqdm(total=total, unit=" texts", desc="embedding", disable=quiet, file=sys.stderr)
    pending: deque[tuple[list[Any], asyncio.Task[EmbedResult]]] = deque()

    async def write_oldest() -> None:
        records, task = pending.popleft()
        result = await task
        writer.write(records, result.vectors)
        bar.update(len(records))

    failed = True
    try:
        for chunk in _chunks(source.records(), chunk_size):
            texts = [text for _, text in chunk]
            pending.append((chunk, asyncio.create_task(engine.embed(texts, options))))
            if len(pending) >= WINDOW:
                await write_oldest()
        while pending:
            await write_oldest()
        failed = False
    finally:
        for _, task in pending:
            task.cancel()
        await asyncio.gather(*(task for _, task in pending), return_exceptions=True)
        if failed:
            bar.leave = False  # the error line alone, not a half-drawn bar
        bar.close()
        await engine.aclose()  # drains the cache writes, also after an error
    return engine.stats.snapshot()


# ---------------------------------------------------------------------------- cache
def _store_name(settings: CachedTEISettings) -> str:
    from .proxy.redact import redact_url

    return redact_url(settings.qdrant_url) if settings.qdrant_url else str(settings.qdrant_path)


async def _with_engine(settings: CachedTEISettings, action: Any) -> Any:
    engine = Engine(settings)
    try:
        return await action(engine)
    finally:
        await engine.aclose()


def _cache_stats(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def stats(engine: Engine) -> Any:
        return await engine.store.collections()

    collections = asyncio.run(_with_engine(settings, stats))
    entries = sum(c.count for c in collections)
    if args.json:
        from .proxy.jsonio import dumps

        body = {
            "store": _store_name(settings),
            "prefix": settings.collection_prefix,
            "entries": entries,
            "collections": [
                {
                    "name": c.name,
                    "namespace": c.namespace,
                    "dimension": c.dimension,
                    "count": c.count,
                }
                for c in collections
            ],
        }
        sys.stdout.write(dumps(body).decode() + "\n")
        return 0
    for c in collections:
        ns = c.namespace or {}
        model = ns.get("model_id", "?") + (f"@{ns['model_sha']}" if ns.get("model_sha") else "")
        options = " ".join(
            f"{key}={ns[key]}"
            for key in (
                "normalize",
                "truncate",
                "truncation_direction",
                "prompt_name",
                "dimensions",
            )
            if ns.get(key) is not None
        )
        print(f"{c.name}  {model}  {c.dimension} dims  {options}  {c.count} entries")
    print(
        f"{len(collections)} collections, {entries} entries under prefix "
        f"{settings.collection_prefix!r} in {_store_name(settings)}"
    )
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.ttl is None:
        raise CLIError(
            "cache prune removes entries older than the TTL: "
            "pass --ttl SECONDS or set CACHED_TEI_TTL"
        )

    async def prune(engine: Engine) -> int:
        return await engine.prune()

    removed = asyncio.run(_with_engine(settings, prune))
    print(f"removed {removed} entries older than {settings.ttl:g} s from {_store_name(settings)}")
    return 0


def _cache_clear(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError(
                "cache clear deletes every cached vector under prefix "
                f"{settings.collection_prefix!r}; pass --yes to confirm"
            )
        answer = input(
            f"delete every cached vector under prefix {settings.collection_prefix!r} "
            f"in {_store_name(settings)}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1

    async def clear(engine: Engine) -> int:
        return await engine.store.clear()

    removed = asyncio.run(_with_engine(settings, clear))
    print(f"removed {removed} entries from {_store_name(settings)}")
    return 0


# ---------------------------------------------------------------------------- the parser
def build_parser() -> argparse.ArgumentParser:
    from .proxy.settings import ProxySettings

    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="log what the engine does (INFO) to stderr"
    )
    _add_setting_flags(
        common,
        CachedTEISettings,
        "setting_",
        "settings (each flag overrides its CACHED_TEI_* variable; keys only from the environment)",
    )

    parser = _Parser(
        prog=PROG,
        description="Cached text embeddings from Hugging Face TEI: a TEI-compatible caching "
        "proxy, a file embedder, and cache maintenance.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="run the TEI-compatible caching proxy",
        description="Serve TEI's API (POST /embed, /, /v1/embeddings; GET /info, /health, "
        "/metrics; other TEI routes forwarded) with the cache in front of CACHED_TEI_URL. "
        "Needs cached-tei[proxy]. API keys: CACHED_TEI_PROXY_API_KEYS=key1,key2.",
    )
    _add_setting_flags(
        serve,
        ProxySettings,
        "proxy_",
        "proxy (each flag overrides its CACHED_TEI_PROXY_* variable)",
    )
    serve.set_defaults(run=_serve)

    embed = commands.add_parser(
        "embed",
        parents=[common],
        help="embed a text or JSONL file into JSONL or .npy",
        description="Embed every line of INPUT (or a string field of each JSONL object) through "
        "the cache, streaming, and write JSONL (input object + 'embedding') or a float32 .npy "
        "(row i = i-th non-empty line). Warms the cache for a corpus.",
    )
    embed.add_argument("input", metavar="INPUT", help="a text file, a .jsonl file, or - for stdin")
    embed.add_argument(
        "-o", "--output", default="-", help="output file (.npy or JSONL); - for stdout (default)"
    )
    embed.add_argument(
        "--input-format",
        choices=("auto", "text", "jsonl"),
        default="auto",
        help="auto: .jsonl/.ndjson are JSONL, anything else one text per line",
    )
    embed.add_argument(
        "--field", default="text", help="the JSONL field holding the text (default text)"
    )
    embed.add_argument(
        "--format",
        choices=("auto", "jsonl", "npy"),
        default="auto",
        help="output format; auto: .npy by suffix, else JSONL",
    )
    embed.add_argument(
        "--kind",
        choices=("document", "query"),
        default="document",
        help="apply the document (default) or query prompt/instruction",
    )
    embed.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK,
        help=f"texts per engine call (default {DEFAULT_CHUNK})",
    )
    embed.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(run=_embed)

    cache = commands.add_parser(
        "cache", help="inspect or clean the cache", description="Inspect or clean the Qdrant cache."
    )
    cache_commands = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    stats = cache_commands.add_parser(
        "stats", parents=[common], help="collections and entry counts"
    )
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(run=_cache_stats)
    prune = cache_commands.add_parser(
        "prune", parents=[common], help="delete entries older than the TTL (--ttl)"
    )
    prune.set_defaults(run=_cache_prune)
    clear = cache_commands.add_parser(
        "clear", parents=[common], help="delete every cache collection under the prefix"
    )
    clear.add_argument("-y", "--yes", action="store_true", help="do not ask")
    clear.set_defaults(run=_cache_clear)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


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


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cached-tei`` entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        _configure_logging("INFO" if args.verbose else "WARNING")
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, CachedTEIError, ValidationError, OSError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
