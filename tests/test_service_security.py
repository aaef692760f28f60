"""Access control over real HTTP (uvicorn in a thread, the real model): API keys in headers, the
LibreTranslate `api_key` field and a keys file, per-key rate limits, CORS, the body size limit on
chunked bodies, and errors that give nothing away."""

from __future__ import annotations

import logging

import httpx
import pytest

from service.api.security import KeyRing, RateLimiter, read_keys_file
from tests.service_support import metric, models_dir, serving, translators  # noqa: F401 - fixtures

KEYS = ("first-key-0123456789", "second-key-abcdefghij")
NATIVE = {"text": "Open the file.", "source": "en", "target": "de"}
ENCODE = {"text": "Open the file.", "source": "en"}
FORM = {"q": "Open the file.", "source": "en", "target": "de"}
LEAKS = ("Traceback", 'File "', ".py", "/work", "/tmp", "site-packages")


@pytest.fixture(scope="module")
def default_server(models_dir, translators):  # noqa: F811
    """The default configuration: no keys, no limits, no CORS."""
    with serving(models_dir, translators) as server:
        yield server


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_reveals_nothing(response: httpx.Response, *secrets: str) -> None:
    for leak in (*LEAKS, *secrets):
        assert leak not in response.text, f"{leak!r} in a {response.status_code} answer: {response.text[:300]}"


def test_native_routes_take_a_key_from_either_header_and_count_refusals(models_dir, translators, caplog):  # noqa: F811
    with caplog.at_level(logging.DEBUG), serving(models_dir, translators, api_keys=KEYS) as server:
        post = lambda **kw: httpx.post(server.url + "/v1/translate", json=NATIVE, timeout=30, **kw)  # noqa: E731
        missing = post()
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "API key is required" in missing.json()["detail"]
        wrong = post(headers=bearer(KEYS[0] + "x"))
        assert (wrong.status_code, wrong.json()) == (403, {"detail": "invalid API key"})
        assert post(headers={"X-API-Key": KEYS[0][:-1]}).status_code == 403  # a prefix is not the key
        assert post(headers=bearer(KEYS[0])).status_code == 200
        assert post(headers={"authorization": f"bearer {KEYS[1]}"}).status_code == 200  # scheme is case-insensitive
        assert post(headers={"X-API-Key": KEYS[1]}).status_code == 200
        encode = lambda **kw: httpx.post(server.url + "/v1/encode", json=ENCODE, timeout=30, **kw)  # noqa: E731
        assert encode(headers={"X-API-Key": KEYS[0]}).status_code == 200
        assert encode().status_code == 401
        for path in ("/health", "/ready", "/languages", "/openapi.json"):  # open: probes, discovery
            assert httpx.get(server.url + path).status_code == 200, path
        exposition = server.metrics()
        for response in (missing, wrong):
            assert_reveals_nothing(response, *KEYS)
    assert metric(exposition, "translator_requests_rejected_total", reason="unauthorized") == 2
    assert metric(exposition, "translator_requests_rejected_total", reason="forbidden") == 2
    assert not any(key in caplog.text for key in KEYS), "an API key reached a log line"


def test_libretranslate_takes_the_api_key_field_or_a_header(models_dir, translators):  # noqa: F811
    with serving(models_dir, translators, api_keys=KEYS[:1]) as server:
        url = server.url + "/translate"
        assert httpx.post(url, data={**FORM, "api_key": KEYS[0]}).status_code == 200  # form field
        assert httpx.post(url, json={**FORM, "api_key": KEYS[0]}).status_code == 200  # JSON field
        assert httpx.post(url, data=FORM, headers={"X-API-Key": KEYS[0]}).status_code == 200
        assert httpx.post(server.url + "/detect", data={"q": "Hello", "api_key": KEYS[0]}).status_code == 200
        for refused in (httpx.post(url, data=FORM), httpx.post(url, json={**FORM, "api_key": KEYS[1]}),
                        httpx.post(url, json={**FORM, "api_key": 12345}), httpx.post(url, data=FORM, headers=bearer("nope"))):
            assert refused.status_code == 403 and "API key" in refused.json()["error"], refused.text  # LibreTranslate: 403 both
            assert_reveals_nothing(refused, *KEYS)


def test_keys_come_from_a_file_as_well_and_the_schema_says_which_routes_need_one(models_dir, translators, tmp_path):  # noqa: F811
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# the team's keys\n\n  {KEYS[1]}  \n")
    with serving(models_dir, translators, api_keys=KEYS[:1], api_keys_file=keys_file) as server:
        for key in KEYS:
            assert httpx.post(server.url + "/v1/translate", json=NATIVE, headers=bearer(key)).status_code == 200
        assert httpx.post(server.url + "/v1/translate", json=NATIVE, headers=bearer("# the team's keys")).status_code == 403
        schema = httpx.get(server.url + "/openapi.json")
    assert_reveals_nothing(schema, *KEYS)
    paths = schema.json()["paths"]
    gated = {f"{method.upper()} {path}" for path, operations in paths.items()
             for method, operation in operations.items() if "security" in operation}
    assert gated == {"POST /v1/translate", "POST /v1/encode", "POST /translate", "POST /detect", "POST /translate_file", "POST /suggest"}
    assert set(schema.json()["components"]["securitySchemes"]) == {"bearerKey", "headerKey"}


@pytest.mark.parametrize("content, message", [(None, "cannot be read"), ("# only a comment\n\n", "holds no key")])
def test_an_unreadable_or_empty_keys_file_is_refused(tmp_path, content, message):
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as refused:
        read_keys_file(path)
    assert str(path) in str(refused.value)


def test_key_ring_matches_whole_keys_only():
    ring = KeyRing(["alpha", "beta", "alpha", ""])
    assert ring.required and [ring.identify(k) for k in ("alpha", "beta", "alph", "alphaa", "", "\udcff")] == [0, 1, None, None, None, None]
    assert not KeyRing([]).required


def test_token_bucket_allows_a_burst_then_the_rate():
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("a", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", now=100.0) == pytest.approx(0.5)  # one token every half second
    assert limiter.take("b", now=100.0) == 0.0  # buckets are per client
    assert limiter.take("a", now=100.5) == 0.0 and limiter.take("a", now=100.5) == pytest.approx(0.5)
    assert [limiter.take("a", now=200.0) for _ in range(4)][-1] > 0  # refills to the burst, not beyond
    small = RateLimiter(rate=1.0, burst=1, max_clients=2)
    for client in "xyz":
        small.take(client, now=0.0)
    assert list(small.buckets) == ["y", "z"]  # the least recently seen is forgotten first


def test_rate_limit_is_per_key_with_retry_after(models_dir, translators):  # noqa: F811
    with serving(models_dir, translators, api_keys=KEYS, rate_limit_per_s=0.2, rate_limit_burst=2) as server:
        send = lambda key: httpx.post(server.url + "/v1/encode", json=ENCODE, headers=bearer(key))  # noqa: E731
        assert [send(KEYS[0]).status_code for _ in range(2)] == [200, 200]
        limited = send(KEYS[0])
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 5
        assert "rate limit" in limited.json()["detail"]
        assert send(KEYS[1]).status_code == 200  # another key has its own bucket
        lt = httpx.post(server.url + "/translate", data={**FORM, "api_key": KEYS[0]})
        assert lt.status_code == 429 and "retry-after" in lt.headers and "error" in lt.json()
        assert metric(server.metrics(), "translator_requests_rejected_total", reason="rate_limited") == 2
    with serving(models_dir, translators, rate_limit_per_s=0.2, rate_limit_burst=1) as server:  # no keys: per address
        answers = [httpx.post(server.url + "/v1/encode", json=ENCODE).status_code for _ in range(2)]
        assert answers == [200, 429]
        assert httpx.get(server.url + "/health").status_code == 200  # probes are never limited


def test_cors_answers_only_the_configured_origins(models_dir, translators, default_server):  # noqa: F811
    allowed, other = "https://app.example.com", "https://evil.example.net"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-api-key"}
    with serving(models_dir, translators, cors_origins=(allowed,)) as server:
        url = server.url + "/v1/translate"
        ok = httpx.options(url, headers={"Origin": allowed, **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
        assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
        refused = httpx.options(url, headers={"Origin": other, **preflight})
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        simple = httpx.post(url, json=NATIVE, headers={"Origin": allowed})
        assert simple.status_code == 200 and simple.headers["access-control-allow-origin"] == allowed
        assert "access-control-allow-origin" not in httpx.post(url, json=NATIVE, headers={"Origin": other}).headers
    answer = httpx.post(default_server.url + "/v1/translate", json=NATIVE, headers={"Origin": allowed})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers  # not configured: none


def chunks(total: int, size: int = 1000):
    """A JSON body of about `total` bytes for any route, sent with Transfer-Encoding: chunked and no
    Content-Length (httpx streams a generator so)."""
    prefix, words = b'{"source": "en", "text": "', b"open the file "
    yield prefix
    sent = len(prefix)
    while sent < total:
        piece = (words * (size // len(words) + 1))[: min(size, total - sent)]
        yield piece
        sent += len(piece)
    yield b'"}'


def test_body_limit_holds_for_chunked_bodies_without_content_length(models_dir, translators):  # noqa: F811
    with serving(models_dir, translators, max_body_bytes=4096, max_text_chars=4000) as server:
        for path, answer_key in (("/v1/translate", "detail"), ("/translate", "error")):
            request = httpx.Request("POST", server.url + path, content=chunks(20_000),
                                    headers={"Content-Type": "application/json"})
            assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
            with httpx.Client() as client:
                refused = client.send(request)
            assert refused.status_code == 413 and "larger than 4096 bytes" in refused.json()[answer_key]
            declared = httpx.post(server.url + path, content=b"x" * 5000, headers={"Content-Type": "application/json"})
            assert declared.status_code == 413
        small = httpx.Request("POST", server.url + "/v1/encode", content=chunks(120), headers={"Content-Type": "application/json"})
        with httpx.Client() as client:
            assert client.send(small).status_code == 200  # chunked under the limit is fine
        assert metric(server.metrics(), "translator_requests_rejected_total", reason="body_too_large") == 4


@pytest.mark.parametrize("path, kwargs", [
    ("/v1/translate", {"content": b'{"text": "a", "source": "en", "target": "de", "beam_size": 1e999}'}),
    ("/v1/translate", {"content": b'{"text": ["\\ud800"], "source": "en", "target": "de"}'}),
    ("/v1/translate", {"content": b"\xff\xfe{}", "headers": {"Content-Type": "application/json"}}),
    ("/v1/translate", {"json": {"text": "a", "source": "../../etc", "target": "de"}}),
    ("/translate", {"data": {"q": "a", "source": "en", "target": "de", "format": "<script>"}}),
    ("/translate", {"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}),
    ("/detect", {"content": b"q=%ff%fe", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}),
    ("/detect", {"content": b"q=a", "headers": {"Content-Type": "multipart/form-data"}}),  # no boundary
])
def test_hostile_bodies_get_a_4xx_that_reveals_nothing(default_server, path, kwargs):
    kwargs.setdefault("headers", {"Content-Type": "application/json"} if "content" in kwargs else {})
    answer = httpx.post(default_server.url + path, **kwargs)
    assert 400 <= answer.status_code < 500, answer.text
    assert_reveals_nothing(answer)
