"""Cache-Control per request: ``no-cache`` recomputes and refreshes, ``no-store`` keeps nothing."""

from __future__ import annotations

import httpx
import numpy as np

from tests.tei_emulator import expected_vector

from .support import FAST, post, texts_sent
from .test_observability import scrape, value, wait_for_writes


def embed(proxy, text: str, cache_control: str | None = None) -> httpx.Response:
    headers = {} if cache_control is None else {"cache-control": cache_control}
    response = post(proxy.url + "/embed", {"inputs": text}, headers=headers)
    assert response.status_code == 200, response.text
    assert np.array_equal(np.asarray(response.json()[0], np.float32), expected_vector(FAST, text))
    return response


def counts(response: httpx.Response) -> tuple[str, str]:
    return response.headers["x-cache-hits"], response.headers["x-cache-misses"]


def test_no_cache_reaches_tei_for_a_cached_text_and_refreshes_it(proxy, emu):
    embed(proxy, "fresh please")
    assert counts(embed(proxy, "fresh please")) == ("1", "0")
    assert counts(embed(proxy, "fresh please", "no-cache")) == ("0", "1")
    assert counts(embed(proxy, "fresh please", "max-age=0, No-Cache")) == ("0", "1")
    assert texts_sent(emu) == ["fresh please"] * 3
    assert counts(embed(proxy, "fresh please")) == ("1", "0")
    assert len(texts_sent(emu)) == 3


def test_no_store_leaves_nothing_behind(proxy, emu):
    assert counts(embed(proxy, "forget me", "no-store")) == ("0", "1")
    assert counts(embed(proxy, "forget me")) == ("0", "1")
    assert texts_sent(emu) == ["forget me"] * 2
    # Writes are queued in order: once the plain request's is done, a no-store one would be too.
    samples = wait_for_writes(proxy.url, 1)
    assert value(samples, "cached_tei_cache_writes_total", result="written") == 1
    assert httpx.get(proxy.url + "/info").json()["cache"]["entries"] == 1


def test_no_store_on_a_second_header_line_counts(proxy, emu):
    """RFC 9110 5.3: repeated field lines are one comma-separated list."""
    lines = [("cache-control", "max-age=0"), ("cache-control", "no-store")]
    response = httpx.post(proxy.url + "/embed", json={"inputs": "second line"}, headers=lines)
    assert response.status_code == 200 and counts(response) == ("0", "1")
    assert counts(embed(proxy, "second line")) == ("0", "1")
    lines = [("cache-control", "no-transform"), ("cache-control", "no-cache")]
    response = httpx.post(proxy.url + "/embed", json={"inputs": "second line"}, headers=lines)
    assert response.status_code == 200 and counts(response) == ("0", "1")
    assert texts_sent(emu) == ["second line"] * 3


def test_no_store_still_reads_a_cached_text(proxy, emu):
    embed(proxy, "already here")
    assert counts(embed(proxy, "already here", "no-store")) == ("1", "0")
    assert texts_sent(emu) == ["already here"]


def test_the_openai_route_honours_cache_control(proxy, emu):
    for _ in range(2):
        response = post(
            proxy.url + "/v1/embeddings",
            {"input": "openai fresh"},
            headers={"cache-control": "no-cache"},
        )
        assert response.status_code == 200 and counts(response) == ("0", "1")
    assert texts_sent(emu) == ["openai fresh"] * 2


def test_directives_are_counted(proxy, emu):
    embed(proxy, "counted", "no-cache")
    embed(proxy, "counted", "no-store, no-cache")
    embed(proxy, "counted", "max-age=0")
    embed(proxy, "counted")
    samples = scrape(proxy.url)
    assert value(samples, "cached_tei_cache_control_total", directive="no-cache") == 2
    assert value(samples, "cached_tei_cache_control_total", directive="no-store") == 1
