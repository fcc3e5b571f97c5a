"""How many TEI requests to keep in flight before misses wait to share one.

TEI merges the requests waiting in its queue into one step, so a request sent while a replica
is free costs no latency, and one sent while every replica is busy waits a step in TEI's queue
anyway. The pacer keeps one request per replica in flight plus one, so that a replica has the
next request queued while this process reads its answer; texts that arrive while every slot is
busy wait (at most one step) and share the next request.

The replicas behind the URL are configured (``tei_replicas``) or learned from TEI's timing
headers: an answer that did not wait in TEI's queue, while texts were held back and TEI's step
took longer than everything else around it, means a replica sat idle (one more slot); an answer
that waited half a step or more means every replica was busy (one slot fewer, never below the
configured count). When this process, not TEI, is the bottleneck, slots are not added: more
requests in flight would only cost more CPU per text.
"""

from __future__ import annotations

from collections.abc import Mapping


class Pacer:
    """The number of requests to keep in flight: at least ``replicas`` + 1, at most ``ceiling``."""

    def __init__(self, replicas: int | None, ceiling: int) -> None:
        self.floor = min((replicas or 1) + 1, ceiling)
        self.ceiling = ceiling
        self.target = self.floor
        self.held_back = False  # set by the batcher: texts are waiting for a free slot

    def observe(self, headers: Mapping[str, str], seconds: float) -> None:
        """Learn from one answer's timing headers (absent when the upstream is not TEI) and
        the ``seconds`` it took here."""
        try:
            queued = int(headers["x-queue-time"])
            step = int(headers["x-inference-time"])
        except (KeyError, ValueError):
            return
        if queued == 0:
            elsewhere = seconds * 1000 - step
            if self.held_back and elsewhere < step and self.target < self.ceiling:
                self.target += 1
        elif 2 * queued >= step and self.target > self.floor:
            self.target -= 1
