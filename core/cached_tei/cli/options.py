"""What every command shares: user errors, and one flag per setting."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pydantic import BaseModel

from ..settings import CachedTEISettings


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


# ---------------------------------------------------------------------------- settings flags
_SECRET_FIELDS = frozenset({"api_key", "qdrant_api_key", "api_keys"})


def _env_name(model: type[BaseModel], name: str) -> str:
    if model is CachedTEISettings and name == "tei_url":
        return "CACHED_TEI_URL"
    prefix = model.model_config.get("env_prefix", "")
    return f"{prefix}{name}".upper()


def add_setting_flags(
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


def settings_from_args(args: argparse.Namespace) -> CachedTEISettings:
    return CachedTEISettings(**_overrides(args, "setting_"))


def proxy_settings_from_args(args: argparse.Namespace) -> Any:
    from ..proxy.settings import ProxySettings

    return ProxySettings(**_overrides(args, "proxy_"))


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
