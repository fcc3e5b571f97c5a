"""Clients that go away or never finish: a disconnect mid-body is no failure of the proxy;
half-sent bodies (after ``body_timeout``) and headers (after ``header_timeout``) are cut off
while others are served; idle keep-alive connections close after ``keep_alive_timeout``."""

from __future__ import annotations

import json
import logging
import socket
import time

import numpy as np

from tests.support.proxy import ProxyProcess
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector

from .support import FAST, post, texts_sent
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


def test_half_sent_bodies_are_cut_off_while_others_are_served(emu, make_proxy):
    proxy = make_proxy(emu.url, proxy={"body_timeout": 1})
    stalled = [half_sent(proxy.url, 500, b'{"inputs": ["half') for _ in range(30)]
    texts = [f"served while stalled {i}" for i in range(5)]
    response = post(proxy.url + "/embed", {"inputs": texts})
    assert response.status_code == 200
    assert np.array_equal(
        np.asarray(response.json(), np.float32), np.stack([expected_vector(FAST, t) for t in texts])
    )
    message = (
        b"Failed to buffer the request body: not received within 1 seconds "
        b"(CACHED_TEI_PROXY_BODY_TIMEOUT)"
    )
    for sock in stalled:
        with sock:
            received = answer(sock)  # the proxy closes the connection after its answer
        assert received.startswith(b"HTTP/1.1 408 ") and received.endswith(message), received
    assert texts_sent(emu) == texts
    assert (
        value(scrape(proxy.url), "cached_tei_proxy_requests_total", route="/embed", status="408")
        == 30
    )


def test_an_honest_slow_client_is_served(emu, make_proxy):
    proxy = make_proxy(emu.url, proxy={"body_timeout": 20})
    body = b'{"inputs": ["slow but steady"]}'
    sock = half_sent(proxy.url, len(body), body[:5])
    with sock:
        for start in range(5, len(body), 5):
            time.sleep(0.1)
            sock.sendall(body[start : start + 5])
        sock.sendall(b"")
        head, _, content = sock.recv(65536).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert np.array_equal(
        np.asarray(json.loads(content)[0], np.float32), expected_vector(FAST, "slow but steady")
    )


def test_idle_keep_alive_connections_are_closed(emu, tmp_path):
    with ProxyProcess(tmp_path, emu.url, args=("--keep-alive-timeout", "1")) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            # answer() returns once the proxy closes the idle connection (else recv times out)
            assert answer(sock).startswith(b"HTTP/1.1 200 ")


def test_headers_that_never_end_are_cut_off_while_others_are_served(emu, tmp_path):
    with ProxyProcess(tmp_path, emu.url, args=("--header-timeout", "1")) as proxy:
        host, port = proxy.url.removeprefix("http://").split(":")
        stalled = []
        for i in range(20):
            sock = socket.create_connection((host, int(port)), timeout=30)
            if i % 2:  # the other half sends nothing at all
                sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
            stalled.append(sock)
        response = post(proxy.url + "/embed", {"inputs": "served while stalled"})
        assert np.array_equal(
            np.asarray(response.json()[0], np.float32),
            expected_vector(FAST, "served while stalled"),
        )
        for sock in stalled:
            with sock:
                assert answer(sock) == b""  # closed by the proxy, without an answer
        # a kept-alive connection whose next request never ends is cut off too
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            first = sock.recv(65536)
            sock.sendall(b"GET /health HTTP/1.1\r\nHo")
            assert (first + answer(sock)).startswith(b"HTTP/1.1 200 ")
        assert "request headers did not arrive within 1s" in proxy.log()


def test_a_client_that_never_reads_its_answer_is_cut_off(tmp_path):
    """Answers larger than the kernel's socket buffers wait in the proxy for their client;
    one that reads nothing for ``send_timeout`` is aborted and its answer dropped."""
    config = EmulatorConfig(dim=1024, step_ms=1.0, per_text_ms=0.0, max_client_batch_size=512)
    texts = [f"never read {i}" for i in range(512)]  # about 6.5 MB of JSON
    body = json.dumps({"inputs": texts}).encode()
    with (
        EmulatorServer(config) as tei,
        ProxyProcess(tmp_path, tei.url, args=("--send-timeout", "1")) as proxy,
    ):
        host, port = proxy.url.removeprefix("http://").split(":")
        stalled = []
        for _ in range(3):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
            sock.settimeout(30)
            sock.connect((host, int(port)))
            sock.sendall(
                b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            stalled.append(sock)
        served = post(proxy.url + "/embed", {"inputs": texts[:2]})
        assert np.array_equal(
            np.asarray(served.json(), np.float32),
            np.stack([expected_vector(config, t) for t in texts[:2]]),
        )
        deadline = time.monotonic() + 30
        while proxy.log().count("read nothing of its answer for 1s") < len(stalled):
            assert time.monotonic() < deadline, proxy.log()[-2000:]
            time.sleep(0.1)
        for sock in stalled:
            with sock:
                received = b""
                try:
                    while chunk := sock.recv(1 << 20):
                        received += chunk
                except ConnectionResetError:
                    pass
            head, _, content = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert len(content) < length  # the rest was dropped, not delivered late
