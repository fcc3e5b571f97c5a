"""``cached-tei serve``: the TEI-compatible caching proxy."""

from __future__ import annotations

import argparse
import logging

from ..settings import FACE_SETTINGS, CachedTEISettings, environment_variable
from .options import CLIError, configure_logging, proxy_settings_from_args, settings_from_args

log = logging.getLogger(__name__)

PER_REQUEST = (
    "cached-tei serve takes these per request, as TEI's API does: send normalize, truncate, "
    "truncation_direction, prompt_name and dimensions in each request's JSON body, an "
    "instruction as part of the text, and 'Cache-Control: no-cache' or 'no-store' for the cache"
)


# ---------------------------------------------------------------------------- serve
def run_serve(args: argparse.Namespace) -> int:
    refused = [n for n in sorted(FACE_SETTINGS) if getattr(args, f"setting_{n}") is not None]
    if refused:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in refused)
        args.parser.error(f"{flags}: {PER_REQUEST}")
    missing = [
        m for m in ("starlette", "uvicorn", "httptools", "prometheus_client") if not _importable(m)
    ]
    if missing:
        raise CLIError(
            f"cached-tei serve needs the proxy extra ({', '.join(missing)} not installed): "
            "pip install 'cached-tei[proxy]'"
        )
    settings = settings_from_args(args)
    proxy = proxy_settings_from_args(args)
    configure_logging(proxy.log_level.upper())
    # From the environment or .env, which clients may share: not an error, but not read.
    ignored = sorted(FACE_SETTINGS & settings.model_fields_set)
    if ignored:
        names = ", ".join(environment_variable(CachedTEISettings, name) for name in ignored)
        log.warning("%s ignored: %s", names, PER_REQUEST)
    from ..proxy.server import serve

    serve(settings, proxy, args.log_format)
    return 0


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
