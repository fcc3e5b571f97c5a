"""Errors raised by cached-tei. Each one says what went wrong and what to do."""

from __future__ import annotations

from typing import Any


class CachedTEIError(Exception):
    """Base class of every error cached-tei raises."""


class EventLoopError(CachedTEIError, RuntimeError):
    """An engine was used from an event loop other than the one it belongs to."""


class InputError(CachedTEIError, ValueError):
    """The texts given cannot be embedded; raised before any network I/O."""


class StoreConfigurationError(CachedTEIError):
    """The cache store cannot be used as configured (folder locked, collection mismatch)."""


class StoreUnavailable(CachedTEIError):
    """The cache store failed this time (unreachable, timed out, refused); a later try may
    succeed. The engine carries on without the cache and counts it."""


class StoreLockedError(StoreConfigurationError):
    """The embedded cache folder is held by another process (qdrant-edge allows one opener).

    ``holder`` describes that process (its PID and command) when it can be known.
    """

    def __init__(self, folder: str, holder: str | None) -> None:
        self.folder = folder
        self.holder = holder
        who = holder or "another process"
        super().__init__(
            f"the embedded cache at {folder} is held by {who}; an embedded folder can be opened "
            "by one process at a time. Either share a Qdrant server between processes "
            "(docker run -d -p 6333:6333 qdrant/qdrant:v1.19.0, or the stack's Qdrant, then set "
            "CACHED_TEI_QDRANT_URL=http://localhost:6333), or give each process its own folder "
            "(CACHED_TEI_QDRANT_PATH), or, without a Qdrant server, run `cached-tei serve` on "
            "this folder and point the other processes at it as their TEI "
            "(CACHED_TEI_URL=http://localhost:8000 CACHED_TEI_QDRANT_URL=:memory:): its cache "
            "serves them all."
        )

    def __reduce__(self) -> tuple[type[StoreLockedError], tuple[str, str | None]]:
        # Raised in worker processes (IngestionPipeline(num_workers=...)): must pickle.
        return type(self), (self.folder, self.holder)


class ModelChangedError(CachedTEIError):
    """The model behind TEI's URL changed while a call ran (or answers with vectors of another
    dimension than its cache holds), so the call's vectors would have mixed two models.

    ``before`` and ``after`` name the two models; the call may be tried again.
    """

    def __init__(self, url: str, before: str, after: str, hint: str) -> None:
        self.url = url
        self.before = before
        self.after = after
        self.hint = hint
        super().__init__(f"the model behind {url} changed from {before} to {after}; {hint}")

    def __reduce__(self) -> tuple[type[ModelChangedError], tuple[str, str, str, str]]:
        return type(self), (self.url, self.before, self.after, self.hint)


class TEIError(CachedTEIError):
    """TEI (or the nginx in front of it) refused or failed a request.

    ``status`` is the HTTP status (``None`` when no response came), ``error_type`` TEI's
    ``error_type`` (``Validation``, ``Tokenizer``, ``Empty``, ``Overloaded``, ``Backend``,
    ``Unhealthy``) or a name for a non-TEI failure (``Unavailable``, ``PayloadTooLarge``,
    ``Unauthorized``...), ``message`` TEI's own message, ``hint`` what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        error_type: str,
        url: str,
        hint: str = "",
    ) -> None:
        self.message = message
        self.status = status
        self.error_type = error_type
        self.url = url
        self.hint = hint
        status_text = f"HTTP {status}" if status is not None else "no response"
        text = f"TEI at {url} failed ({status_text}, {error_type}): {message}"
        super().__init__(f"{text}. {hint}" if hint else text)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Raised in worker processes: rebuilt from its fields, not from ``args``.
        return _rebuild_tei_error, (
            self.message,
            self.status,
            self.error_type,
            self.url,
            self.hint,
        )

    @property
    def transient(self) -> bool:
        """Whether trying again later can succeed (overload, restart, network)."""
        return self.status is None or self.status in TRANSIENT_STATUSES


TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})


def _rebuild_tei_error(
    message: str, status: int | None, error_type: str, url: str, hint: str
) -> TEIError:
    return TEIError(message, status=status, error_type=error_type, url=url, hint=hint)


class StoreDiskFullError(StoreUnavailable):
    """The embedded store's disk has too little free space to write (or open) safely.

    The engine does not raise it to callers: it skips the store and counts it
    (``Stats.disk_full``); embeddings are still computed.
    """

    def __init__(self, folder: str, free: int, needed: int, action: str) -> None:
        self.folder = folder
        self.free = free
        self.needed = needed
        self.action = action
        super().__init__(
            f"the embedded cache at {folder} has {free / 2**20:.1f} MiB free, {action} needs "
            f"{needed / 2**20:.1f} MiB: the cache is skipped until space is freed (delete files "
            "there, cached-tei cache prune or cache clear, or move CACHED_TEI_QDRANT_PATH); "
            "CACHED_TEI_MIN_FREE_DISK_BYTES sets the margin kept free"
        )

    def __reduce__(self) -> tuple[type[StoreDiskFullError], tuple[str, int, int, str]]:
        return type(self), (self.folder, self.free, self.needed, self.action)
