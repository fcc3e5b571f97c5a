"""Refusals: an .env that is valid but unsafe to deploy as it is."""

from __future__ import annotations

import ipaddress

from .settings import Settings


def refusal(s: Settings) -> str | None:
    """Why this .env must not be deployed, in one line that names the fix; None if it may."""
    public = not ipaddress.ip_address(s.proxy_bind).is_loopback
    if public and not s.has_proxy_api_keys and not s.proxy_allow_anonymous:
        return (
            f"PROXY_BIND={s.proxy_bind} publishes the proxy beyond this host without API keys: "
            "set PROXY_API_KEYS, or PROXY_BIND=127.0.0.1, or PROXY_ALLOW_ANONYMOUS=true to "
            "serve anyone who can reach it"
        )
    if s.monitoring and not s.has_grafana_admin_password:
        return (
            "MONITORING=true needs GRAFANA_ADMIN_PASSWORD in stack/.env "
            "(e.g. the output of `openssl rand -hex 16`), or MONITORING=false"
        )
    return None
