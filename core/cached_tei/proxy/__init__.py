"""The TEI-compatible caching proxy (``cached-tei serve``; needs ``cached-tei[proxy]``).

``create_app`` and ``serve`` import Starlette and uvicorn when first used, so that
``ProxySettings`` stays importable without the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import ProxySettings

if TYPE_CHECKING:
    from .app import create_app
    from .server import serve

__all__ = ["ProxySettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .server import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
