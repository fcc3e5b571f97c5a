#!/usr/bin/env python3
"""Generate stack/compose.yml, stack/nginx.conf and stack/prometheus.yml from stack/.env.

    python stack/generate.py [--env stack/.env] [--out stack/] [--check]

The generator lives in stack/stackgen/ (one module per generated file); this script runs it
with the system python3 and PyYAML, and re-exports its public names for the tests.
"""

# The imports follow the sys.path and PyYAML checks on purpose.
# ruff: noqa: E402
from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

try:
    import yaml  # noqa: F401
except ModuleNotFoundError:
    sys.exit("generate.py: PyYAML is missing: pip install pyyaml (or apt install python3-yaml)")

from stackgen.cli import generate, main
from stackgen.compose import build_compose, render_compose
from stackgen.constants import COMPOSE_SECRETS, PROMETHEUS_PORT, TEI_VARIANTS
from stackgen.env import ConfigError, parse_dotenv
from stackgen.nginx import Route, render_nginx_conf
from stackgen.prometheus import build_prometheus_config, render_prometheus_config
from stackgen.settings import Settings, load_settings

__all__ = [
    "COMPOSE_SECRETS",
    "PROMETHEUS_PORT",
    "TEI_VARIANTS",
    "ConfigError",
    "Route",
    "Settings",
    "build_compose",
    "build_prometheus_config",
    "generate",
    "load_settings",
    "main",
    "parse_dotenv",
    "render_compose",
    "render_nginx_conf",
    "render_prometheus_config",
]

if __name__ == "__main__":
    sys.exit(main())
