"""What cached-tei keeps per process, and its one policy for fork() and exit.

The process-wide state, each piece where its job is, under this policy:

- ``runtime.RUNTIME``: the loop thread and the engines faces share (fork and exit hooks);
- ``stores.embedded``: the embedded folders this process has open, one opener per folder
  (fork hook; they close with the last engine using them);
- ``settings._warned``: the unknown ``CACHED_TEI_*`` variables already warned about, inherited
  on purpose (a child does not warn again about what its parent did);
- ``tracing``: the tracer, set once per process by the first engine (OpenTelemetry's SDK
  restarts its own export thread in a forked child, so it needs no hook).

The policy: in a child made by ``fork()``, every registered state forgets what it inherited
before anything else runs there (the parent still owns those threads, locks and files: they
are kept, never touched, never closed). At interpreter exit, the exit hooks run once each, the
last registered first (engines drain their writes before their folders close).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable

_after_fork: list[Callable[[], None]] = []
_at_exit: list[Callable[[], None]] = []


def on_fork(forget: Callable[[], None]) -> None:
    """Call ``forget`` in every child this process forks, to drop inherited state."""
    _after_fork.append(forget)


def at_exit(hook: Callable[[], None]) -> None:
    """Call ``hook`` once at interpreter exit (registering it again does nothing)."""
    if hook not in _at_exit:
        _at_exit.append(hook)
        atexit.register(hook)


def _forget_in_child() -> None:
    for forget in _after_fork:
        forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
