"""Parsers for .env values: (variable, text) -> value; a ConfigError names the variable."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from .env import ConfigError

Parser = Callable[[str, str], Any]

SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
DURATION = re.compile(r"^(\d+(ms|s|m|h))+$")
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY = re.compile(r"^\d+(Ki|Mi|Gi|Ti)$")
HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$")


def text(var: str, raw: str) -> str:
    return raw


def required(var: str, raw: str) -> str:
    if not raw:
        raise ConfigError(f"{var} is required")
    return raw


def matching(pattern: str, what: str) -> Parser:
    def parse(var: str, raw: str) -> str:
        if not re.match(pattern, raw):
            raise ConfigError(f"{var} {raw!r} is not {what}")
        return raw

    return parse


def one_of(*choices: str) -> Parser:
    def parse(var: str, raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            shown = ", ".join(c or "(empty)" for c in choices)
            raise ConfigError(f"{var} must be one of {shown}, got {raw!r}")
        return value

    return parse


def integer(minimum: int) -> Parser:
    def parse(var: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{var} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(f"{var} must be >= {minimum}, got {value}")
        return value

    return parse


def optional_count(var: str, raw: str) -> int | None:
    """An integer >= 1, or empty / 0 for the server's default."""
    if not raw:
        return None
    return integer(0)(var, raw) or None


def seconds(var: str, raw: str) -> str:
    if raw and not raw.isdigit():
        raise ConfigError(f"{var} must be seconds (an integer) or empty, got {raw!r}")
    return raw


def workers(var: str, raw: str) -> str:
    if raw.lower() == "auto":
        return "auto"
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{var} must be auto or a number of processes >= 1, got {raw!r}")
    return str(int(raw))


def boolean(var: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{var} must be true or false, got {raw!r}")


def is_set(var: str, raw: str) -> bool:
    """For secrets: only whether one is set is known to the generator, never its value."""
    return bool(raw)


def port(var: str, raw: str) -> int | None:
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"{var} must be a TCP port (1-65535), got {raw!r}")
    return int(raw)


def duration(var: str, raw: str) -> str:
    if not DURATION.match(raw):
        raise ConfigError(f"{var} must be a duration like 30s, 10m or 1h, got {raw!r}")
    return raw


def quantity(var: str, raw: str) -> str:
    if not QUANTITY.match(raw):
        raise ConfigError(f"{var} must be a size like 512Mi, 20Gi or 1Ti, got {raw!r}")
    return raw


def pinned(var: str, raw: str) -> str:
    if not SEMVER.match(raw):
        raise ConfigError(
            f"{var} must be a pinned x.y.z version (never 'latest' or a floating tag), got {raw!r}"
        )
    return raw


def at_least(minimum: tuple[int, int, int], why: str, use: str) -> Parser:
    """A pinned version no older than `minimum`: `why` says what needs it, `use` what to pick."""

    def parse(var: str, raw: str) -> str:
        version = tuple(int(part) for part in re.findall(r"\d+", pinned(var, raw)))
        if version < minimum:
            oldest = ".".join(map(str, minimum))
            raise ConfigError(f"{var} {raw} is too old: {why} from {oldest} on; use {use}")
        return raw

    return parse


def gpu_ids(var: str, raw: str) -> tuple[str, ...]:
    ids = split_list(raw)
    for gpu in ids:
        if not re.match(r"^[A-Za-z0-9-]+$", gpu):
            raise ConfigError(f"{var} entry {gpu!r} is not an index or a GPU UUID")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{var} lists a GPU more than once: {list(ids)}")
    return ids


def host_ports(var: str, raw: str) -> tuple[str, ...]:
    entries = split_list(raw)
    for entry in entries:
        m = HOSTPORT.match(entry)
        if not m or not 1 <= int(m.group(3)) <= 65535:
            raise ConfigError(f"{var} entry {entry!r} must be host:port")
    return entries


def http_url(var: str, raw: str) -> str:
    url = raw.rstrip("/")
    if url and not re.match(r"^https?://[^\s/]+", url):
        raise ConfigError(f"{var} must be http(s)://host:port, got {url!r}")
    return url


def ip_address(var: str, raw: str) -> str:
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        raise ConfigError(f"{var} must be an IP address, got {raw!r}") from None
    return raw


def split_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.replace(" ", ",").split(",") if item.strip())
