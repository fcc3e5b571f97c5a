"""What every command shares: user errors, and one flag per setting."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Collection, Mapping
from typing import Any

from pydantic_settings import BaseSettings

from ..logs import LogFormat, LogSettings, json_line
from ..logs import configure_logging as configure_logging
from ..settings import CachedTEISettings, environment_variable


class CLIError(Exception):
    """A problem the user can fix; printed as one line."""


# ---------------------------------------------------------------------------- settings flags
# Secrets stay in the environment: no flag (a flag would show in `ps` and shell history).
SECRET_FIELDS = frozenset({"api_key", "qdrant_api_key", "api_keys", "metrics_key"})
# What each maintenance command reads: where the store is.
STORE_SETTINGS = frozenset(
    {"qdrant_url", "qdrant_path", "qdrant_prefer_grpc", "qdrant_timeout", "collection_prefix"}
)
# What ``cache verify`` reads besides the store: how to reach TEI to re-embed a sample.
VERIFY_SETTINGS = STORE_SETTINGS | {
    "tei_url",
    "timeout",
    "retry_deadline",
    "max_retries",
    "max_concurrency",
    "batch_size",
    "max_payload_bytes",
}
# What ``embed`` runs with unless told otherwise: a corpus is read once, so an in-process LRU
# would only grow with it.
EMBED_DEFAULTS: Mapping[str, Any] = {"lru_bytes": 0}
# The JSONL field ``embed`` reads unless --field names another.
DEFAULT_FIELD = "text"
_PYTHON_NONE = re.compile(r"\bNone\b")
# The dest prefixes of the engine's, the proxy's and the logs' setting flags.
FLAG_PREFIXES = ("setting_", "proxy_", "log_")


def add_setting_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseSettings],
    dest_prefix: str,
    title: str,
    *,
    only: Collection[str] | None = None,
    refused: Collection[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """One ``--flag VALUE`` per field of a settings class (secrets stay in the environment):
    every field, or ``only`` those the command uses. ``refused`` fields are parsed but not
    shown (the command explains why it refuses them); ``defaults`` are the command's own."""
    group = parser.add_argument_group(title)
    for name, field in model.model_fields.items():
        shown = only is None or name in only
        if name in SECRET_FIELDS or not (shown or name in refused):
            continue
        default = (defaults or {}).get(name, field.get_default(call_default_factory=True))
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"{dest_prefix}{name}",
            metavar="VALUE",
            default=None,
            help=_help(model, name, default) if shown else argparse.SUPPRESS,
        )


def _help(model: type[BaseSettings], name: str, default: Any) -> str:
    # Descriptions speak Python (None); on the command line a setting is unset.
    description = _PYTHON_NONE.sub("unset", model.model_fields[name].description or "")
    variable = environment_variable(model, name)
    text = f"{description.rstrip('.')} (default {_shown(default)}) [env {variable}]"
    return text.strip().replace("%", "%%")


def _shown(value: Any) -> str:
    """A default as it is typed on the command line."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != "" else "empty"


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


def counted(count: int, one: str, many: str) -> str:
    """``1 entry``, ``2 entries``."""
    return f"{count} {one if count == 1 else many}"


def tell(log_format: LogFormat, message: str, level: int = logging.INFO) -> None:
    """A line for the user on stderr: as it is, or a JSON log line when logs are JSON."""
    line = json_line("cached_tei.cli", level, message) if log_format == "json" else message
    print(line, file=sys.stderr)
