"""Several API keys: a cache namespace per key unless shared; nothing crosses between keys."""

from __future__ import annotations

import hashlib

import httpx
import numpy as np

from tests.tei_emulator import expected_vector

from .support import FAST, post, texts_sent
from .test_observability import wait_for_writes

KEYS = ("alpha-key-0123456789", "beta-key-9876543210")


def embed(proxy, key: str, text: str) -> tuple[str, str]:
    response = post(
        proxy.url + "/embed", {"inputs": [text]}, headers={"authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    assert np.array_equal(np.asarray(response.json()[0], np.float32), expected_vector(FAST, text))
    return response.headers["x-cache-hits"], response.headers["x-cache-misses"]


def info(proxy, key: str) -> dict:
    response = httpx.get(proxy.url + "/info", headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200
    return response.json()["cache"]


def test_two_keys_do_not_share_hits(emu, make_proxy):
    proxy = make_proxy(emu.url, proxy={"api_keys": ",".join(KEYS)})
    alpha, beta = KEYS
    assert embed(proxy, alpha, "private text") == ("0", "1")
    assert embed(proxy, beta, "private text") == ("0", "1")
    assert embed(proxy, alpha, "private text") == ("1", "0")
    assert embed(proxy, beta, "private text") == ("1", "0")
    assert texts_sent(emu) == ["private text"] * 2
    assert embed(proxy, alpha, "only alpha") == ("0", "1")


def test_info_shows_the_callers_own_namespace_without_its_key(emu, make_proxy):
    proxy = make_proxy(emu.url, proxy={"api_keys": ",".join(KEYS)})
    alpha, beta = KEYS
    embed(proxy, alpha, "a1")
    embed(proxy, alpha, "a2")
    embed(proxy, beta, "b1")
    wait_for_writes(proxy.url, 3)
    mine, theirs = info(proxy, alpha), info(proxy, beta)
    assert mine["collection"] != theirs["collection"]
    assert (mine["entries"], theirs["entries"]) == (2, 1)
    tenants = {mine["namespace"]["tenant"], theirs["namespace"]["tenant"]}
    assert len(tenants) == 2
    for key in KEYS:
        secret_forms = {key, hashlib.sha256(key.encode()).hexdigest()}
        assert not any(form in str(tenants) for form in secret_forms)
        assert key not in str(mine) + str(theirs)


def test_the_operator_can_share_the_cache_across_keys(emu, make_proxy):
    proxy = make_proxy(emu.url, proxy={"api_keys": ",".join(KEYS), "share_cache": True})
    alpha, beta = KEYS
    assert embed(proxy, alpha, "shared text") == ("0", "1")
    assert embed(proxy, beta, "shared text") == ("1", "0")
    assert texts_sent(emu) == ["shared text"]
    assert "tenant" not in info(proxy, beta)["namespace"]


def test_one_key_keeps_the_namespace_of_no_key(emu, make_proxy, tmp_path):
    store = tmp_path / "one-store"
    open_proxy = make_proxy(emu.url, qdrant_path=store)
    embed(open_proxy, "unused", "kept across")
    wait_for_writes(open_proxy.url, 1)
    open_proxy.stop()
    keyed = make_proxy(emu.url, qdrant_path=store, proxy={"api_keys": KEYS[0]})
    assert embed(keyed, KEYS[0], "kept across") == ("1", "0")
    assert "tenant" not in info(keyed, KEYS[0])["namespace"]
