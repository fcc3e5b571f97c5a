"""How many entries each embedded collection held when it was last flushed.

qdrant-edge keeps the point ids in an id tracker file; if that file is truncated or damaged,
the shard opens with fewer points and nothing says so. The count written at each flush and
close (``entries.json`` beside the shard) is compared at open: fewer entries than recorded
were lost, and that is logged and reported (``CollectionInfo.lost``). A crash loses no count
this way: the WAL replays writes made after the last record, so a reopened shard holds at
least as many.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

LEDGER = "entries.json"


def recorded(folder: Path) -> int | None:
    """The entries recorded for the collection in ``folder``; None if none were."""
    try:
        return int(json.loads((folder / LEDGER).read_text())["entries"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record(folder: Path, entries: int) -> None:
    """Record ``entries`` for the collection in ``folder`` (best effort: a full disk)."""
    temporary = folder / f"{LEDGER}.tmp"
    try:
        temporary.write_text(json.dumps({"entries": entries}))
        temporary.replace(folder / LEDGER)
    except OSError as exc:
        log.warning("could not record the entry count of %s: %s", folder, exc)


def lost_entries(folder: Path, entries: int) -> int:
    """How many entries the collection lost since its last record (0 if none), logged."""
    expected = recorded(folder)
    if expected is None or entries >= expected:
        return 0
    log.error(
        "cache collection %s holds %d entries, %d fewer than when it was last written: its "
        "id tracker lost them (a truncated or damaged file); the lost ones are computed "
        "again. Check the rest with cached-tei cache verify, or start afresh with "
        "cached-tei cache clear",
        folder.name,
        entries,
        expected - entries,
    )
    return expected - entries
