"""``cached-tei embed``: a text or JSONL file through the cache, into JSONL or ``.npy``."""

from __future__ import annotations

import argparse
import asyncio
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

from ..engine import EmbedResult, Engine
from ..keys import EmbedOptions
from ..settings import CachedTEISettings
from ..stats import Stats
from ..values import ModelKind, SparseVector
from .options import DEFAULT_FIELD, EMBED_DEFAULTS, CLIError, counted, settings_from_args, tell

# Engine calls in flight at once while embedding a file.
WINDOW = 2


# ---------------------------------------------------------------------------- embed
@dataclass
class _Source:
    """Texts from a file (or stdin): one per line, or a string field of each JSONL object.

    Lines are split on ``\\n`` only; empty lines are skipped.
    """

    path: Path | None
    jsonl: bool
    field: str
    field_given: bool

    @classmethod
    def of(cls, name: str, input_format: str, field: str | None) -> _Source:
        path = None if name == "-" else Path(name)
        if path is not None and not path.is_file():
            raise CLIError(f"no such file: {name}")
        if input_format == "auto":
            jsonl = path is not None and path.suffix.lower() in (".jsonl", ".ndjson")
        else:
            jsonl = input_format == "jsonl"
        return cls(path, jsonl, DEFAULT_FIELD if field is None else field, field is not None)

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "<stdin>"

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        if self.path is None:
            opened: Any = nullcontext(sys.stdin.buffer)
        else:
            opened = open(self.path, "rb")
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
        from ..jsonio import loads

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
            if not isinstance(record, dict):
                raise CLIError(f"{self.name} line {number} is not a JSON object")
            yield record, self._text(record, number)

    def _text(self, record: dict[str, Any], number: int) -> str:
        where = f"{self.name} line {number}"
        if self.field not in record:
            # Only a default field may be the wrong one: a chosen one is just missing here.
            choose = "" if self.field_given else " (choose the field with --field)"
            raise CLIError(f"{where} has no field {self.field!r}{choose}")
        value = record[self.field]
        if not isinstance(value, str):
            raise CLIError(
                f"{where}: field {self.field!r} is {_json_type(value)}, not a string of text"
            )
        if not value:
            raise CLIError(f"{where}: field {self.field!r} is empty; remove the line or fill it")
        return value


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return "an array" if isinstance(value, list) else "an object"


class _Partial:
    """An output file written as ``OUTPUT.partial`` and renamed into place when complete, so
    that a failed run leaves an existing output untouched."""

    def __init__(self, target: str) -> None:
        self.target = Path(target)
        if not self.target.parent.is_dir():
            raise CLIError(f"no such folder: {self.target.parent} (for {target})")
        if self.target.is_dir():
            raise CLIError(f"{target} is a folder: name an output file")
        self.path = self.target.with_name(self.target.name + ".partial")

    def close(self, ok: bool) -> None:
        if ok:
            os.replace(self.path, self.target)
        else:
            self.path.unlink(missing_ok=True)


class _JSONLWriter:
    """One object per line: the input object (or ``{"text": ...}``) plus ``embedding``."""

    def __init__(self, target: str) -> None:
        from ..jsonio import dumps

        self._dumps = dumps
        self._partial = None if target == "-" else _Partial(target)
        # open until close(): the file is written chunk by chunk
        self._handle: IO[bytes] = (
            sys.stdout.buffer if self._partial is None else open(self._partial.path, "wb")
        )

    def write(
        self, records: Sequence[tuple[dict[str, Any] | None, str]], vectors: np.ndarray
    ) -> None:
        lines = []
        for (record, text), vector in zip(records, vectors, strict=True):
            item: dict[str, Any] = dict(record) if record is not None else {"text": text}
            item["embedding"] = _sparse_json(vector) if isinstance(vector, SparseVector) else vector
            lines.append(self._dumps(item))
        self._handle.write(b"\n".join(lines) + b"\n")

    def close(self, ok: bool) -> None:
        if self._partial is None:
            self._handle.flush()
            return
        self._handle.close()
        self._partial.close(ok)


class _NpyWriter:
    """A float32 ``(n, dim)`` array, written row block by row block into a memory map
    (or gathered in memory when the count is unknown), renamed into place on success."""

    def __init__(self, target: str, total: int | None) -> None:
        self._partial = _Partial(target)
        self._total = total
        self._array: np.memmap[Any, np.dtype[np.float32]] | None = None
        self._blocks: list[np.ndarray] = []
        self._row = 0

    def write(self, records: Sequence[Any], vectors: np.ndarray) -> None:
        if self._total is None:
            self._blocks.append(vectors)
            return
        if self._array is None:
            self._array = np.lib.format.open_memmap(
                self._partial.path,
                mode="w+",
                dtype=np.float32,
                shape=(self._total, vectors.shape[1]),
            )
        self._array[self._row : self._row + len(vectors)] = vectors
        self._row += len(vectors)

    def close(self, ok: bool) -> None:
        if ok and self._array is not None:
            self._array.flush()
        elif ok:
            blocks = self._blocks or [np.zeros((0, 0), dtype=np.float32)]
            with open(self._partial.path, "wb") as handle:
                np.save(handle, np.concatenate(blocks), allow_pickle=False)
        self._array = None
        self._partial.close(ok)


def _sparse_json(vector: SparseVector) -> dict[str, Any]:
    """A sparse vector as JSON: its indices, and its values as float32 (TEI's digits)."""
    return {"indices": vector.indices, "values": np.asarray(vector.values, dtype=np.float32)}


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


def run_embed(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    unset = {k: v for k, v in EMBED_DEFAULTS.items() if k not in settings.model_fields_set}
    settings = settings.model_copy(update=unset)
    source = _Source.of(args.input, args.input_format, args.field)
    output_format = args.format
    if output_format == "auto":
        output_format = "npy" if args.output.lower().endswith(".npy") else "jsonl"
    if output_format == "npy" and args.output == "-":
        raise CLIError("a .npy output needs a file name: -o vectors.npy")
    if output_format == "npy" and args.sparse:
        raise CLIError("sparse vectors have no .npy form: write JSONL (-o vectors.jsonl)")
    if args.chunk_size < 1:
        raise CLIError("--chunk-size must be at least 1")
    total = source.count()
    writer: _JSONLWriter | _NpyWriter = (
        _NpyWriter(args.output, total) if output_format == "npy" else _JSONLWriter(args.output)
    )
    kind: ModelKind = "sparse" if args.sparse else "embedding"
    if args.sparse:
        # A SPLADE model reads queries and documents alike; the dense prompts are not its own.
        options = EmbedOptions(
            kind="sparse",
            truncate=settings.truncate,
            truncation_direction=settings.truncation_direction,
        )
    else:
        options = EmbedOptions.from_settings(settings, args.kind)
    # The bar is for a person at a terminal; JSON logs are for a machine.
    progress = not args.quiet and args.log_format != "json"
    started = time.perf_counter()
    ok = False
    try:
        engine_stats = asyncio.run(
            _embed_file(
                settings, kind, options, source, writer, total, args.chunk_size, progress=progress
            )
        )
        ok = True
    finally:
        writer.close(ok)
    if args.quiet:
        return 0
    elapsed = time.perf_counter() - started
    count = engine_stats.hits + engine_stats.misses + engine_stats.duplicates
    rate = count / elapsed if elapsed > 0 else 0.0
    tell(
        args.log_format,
        f"embedded {counted(count, 'text', 'texts')} in {elapsed:.2f} s ({rate:.0f} texts/s): "
        f"{_sources(engine_stats)}, {engine_stats.duplicates} repeated; wrote {args.output}",
    )
    return 0


def _sources(stats: Stats) -> str:
    """Where the texts came from; a cached-tei proxy as the TEI URL is named apart."""
    hits = counted(stats.hits, "cache hit", "cache hits")
    if not stats.upstream_hits:
        return f"{hits}, {stats.misses} computed by TEI"
    computed = max(stats.misses - stats.upstream_hits, 0)
    return (
        f"{hits}, {stats.upstream_hits} from the cache of the cached-tei proxy at the TEI URL, "
        f"{computed} computed by TEI"
    )


async def _embed_file(
    settings: CachedTEISettings,
    kind: ModelKind,
    options: EmbedOptions,
    source: _Source,
    writer: _JSONLWriter | _NpyWriter,
    total: int | None,
    chunk_size: int,
    *,
    progress: bool,
) -> Stats:
    from tqdm import tqdm

    engine = Engine(settings, kind)
    bar = tqdm(total=total, unit=" texts", desc="embedding", disable=not progress, file=sys.stderr)
    pending: deque[tuple[list[Any], asyncio.Task[EmbedResult]]] = deque()

    async def write_oldest(last: bool = False) -> None:
        records, task = pending.popleft()
        result = await task
        writer.write(records, result.vectors)
        if last:
            bar.n += len(records)  # drawn once, by close()
        else:
            bar.update(len(records))

    failed = True
    try:
        for chunk in _chunks(source.records(), chunk_size):
            texts = [text for _, text in chunk]
            embedding = engine.embed(
                texts,
                options,
                read_cache=settings.read_cache,
                write_cache=settings.write_cache,
            )
            pending.append((chunk, asyncio.create_task(embedding)))
            if len(pending) >= WINDOW:
                await write_oldest()
        while pending:
            await write_oldest(last=len(pending) == 1)
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
