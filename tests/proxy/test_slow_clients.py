"""Clients that go away or never finish: a disconnect mid-body is no failure of the proxy,
half-sent bodies are cut off after ``body_timeout`` while others are served, idle keep-alive
connections are closed after ``keep_alive_timeout``."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np

from tests.tei_emulator import expected_vector

from .support import FAST, post
from .test_observability import scrape, value


def half_sent(url: str, declared: int, sent: bytes) -> socket.socket:
    """A connection that sent a POST /embed's headers and ``sent`` of ``declared`` body bytes."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST /embed HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def answer(sock: socket.socket) -> bytes:
    """Everything the proxy sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_client_gone_mid_body_is_neither_an_error_nor_a_500(proxy, emu, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(3):
        half_sent(proxy.url, 1000, b'{"inputs": ["never fin').close()
    deadline = time.monotonic() + 10
    while (
        value(scrape(proxy.url), "cached_tei_proxy_requests_total", route="/embed", status="499")
        < 3
    ):
        assert time.monotonic() < deadline, "the disconnects were not counted"
        time.sleep(0.05)
    samples = scrape(proxy.url)
    assert value(samples, "cached_tei_proxy_requests_total", route="/embed", status="500") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert emu.requests == []
    response = post(proxy.url + "/embed", {"inputs": "still fine"})
    assert np.array_equal(
        np.asarray(response.json()[0], np.float32), expected_vector(FAST, "still fine")
    )
