"""What every command shares: user errors, and one flag per setting."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pydantic_settings import BaseSettings

from ..logs import LogFormat, LogSettings, json_line
from ..logs import configure_logging as configure_logging
from ..settings import CachedTEISettings, environment_variable


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


# ---------------------------------------------------------------------------- settings flags
_SECRET_FIELDS = frozenset({"api_key", "qdrant_api_key", "api_keys", "metrics_key"})


def add_setting_flags(
    parser: argparse.ArgumentParser, model: type[BaseSettings], dest_prefix: str, title: str
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
            help=f"{description}{shown} [env {environment_variable(model, name)}]".strip().replace(
                "%", "%%"
            ),
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


def log_settings_from_args(args: argparse.Namespace) -> LogSettings:
    return LogSettings(**_overrides(args, "log_"))


def tell(log_format: LogFormat, message: str, level: int = logging.INFO) -> None:
    """A line for the user on stderr: as it is, or a JSON log line when logs are JSON."""
    line = json_line("cached_tei.cli", level, message) if log_format == "json" else message
    print(line, file=sys.stderr)
