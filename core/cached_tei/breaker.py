"""A circuit breaker, so that a dead Qdrant costs no latency."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; lets one trial through per ``cooldown``."""

    def __init__(
        self, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._open_until = 0.0

    @property
    def state(self) -> Literal["closed", "open", "half-open"]:
        if self._failures < self._threshold:
            return "closed"
        return "open" if self._clock() < self._open_until else "half-open"

    def allow(self) -> bool:
        """Whether to try the store now. A half-open breaker lets one caller through."""
        state = self.state
        if state == "half-open":
            self._open_until = self._clock() + self._cooldown
        return state != "open"

    def record_success(self) -> None:
        self._failures = 0

    def record_failure(self) -> None:
        self._failures += 1
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._cooldown
