"""``cached-tei serve``: the TEI-compatible caching proxy."""

from __future__ import annotations

import argparse

from .options import CLIError, configure_logging, proxy_settings_from_args, settings_from_args


# ---------------------------------------------------------------------------- serve
def run_serve(args: argparse.Namespace) -> int:
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
    from ..proxy.server import serve

    serve(settings, proxy, args.log_format)
    return 0


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
