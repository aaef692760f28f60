"""Fuzzing every route of the real server (uvicorn on 127.0.0.1, the real model) with schemathesis,
from the OpenAPI schema the server publishes: valid and invalid bodies (JSON, and the LibreTranslate
routes' URL-encoded and multipart forms), checked for no 5xx, a documented status, and a response
that matches its schema.

    FUZZ_EXAMPLES=300 FUZZ_MIN_CASES=1000 pytest tests/test_fuzz_api.py      # `make fuzz`

`make test` runs FUZZ_EXAMPLES (default 12) per route. The server is configured small (beam, lengths,
texts) so that a case costs milliseconds; the schema carries those limits, so the fuzzer explores the
edges of what this server accepts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.service_support import models_dir, serving, translators  # noqa: F401 - fixtures

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
MIN_CASES = int(os.environ.get("FUZZ_MIN_CASES", "0"))  # `make fuzz` insists on 1,000
REPORT = os.environ.get("FUZZ_REPORT")  # where `make fuzz` writes the counts (JSON)
SMALL = dict(max_beam_size=2, max_alternatives=1, max_output_tokens=16, max_texts_per_request=4, max_text_chars=200,
             queue_limit=64, request_deadline_s=20)
# What a response must satisfy; the data-acceptance checks are left out: a schema-valid request may
# still name a language pair that is not served, or a text too long in tokens (both a 400 by design).
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]
cases: dict[str, dict[int, int]] = {}  # operation → status → count


def published_schema() -> dict:
    """The schema a server with these settings publishes at /openapi.json (compared below)."""
    from service.app import create_app
    from service.config import Settings

    return create_app(Settings(default_beam_size=1, **SMALL)).openapi()  # the beam size serving() sets


# Built at collection from the same app factory (schemathesis' lazy fixture loader does not run on
# pytest 9); test_the_fuzzed_schema_is_what_the_server_publishes keeps the two the same.
schema = schemathesis.openapi.from_dict(published_schema())


@pytest.fixture(scope="module")
def server(models_dir, translators):  # noqa: F811
    with serving(models_dir, translators, **SMALL) as running:
        yield running
    total = sum(sum(statuses.values()) for statuses in cases.values())
    if REPORT:
        Path(REPORT).parent.mkdir(parents=True, exist_ok=True)
        Path(REPORT).write_text(json.dumps({"examples_per_route": EXAMPLES, "cases": total, "by_route": cases}, indent=2) + "\n")
    assert total >= MIN_CASES, f"only {total} cases were generated; at least {MIN_CASES} wanted"


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_route_answers_within_its_schema(case, server):
    response = case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)
    statuses = cases.setdefault(f"{case.method} {case.path}", {})
    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1


def test_the_fuzzed_schema_is_what_the_server_publishes(server):
    published = httpx.get(server.url + "/openapi.json").json()
    assert published == published_schema()
    body = published["components"]["schemas"]["TranslateRequest"]["properties"]
    assert {"maxLength": 200, "minLength": 1, "type": "string"}.items() <= body["text"]["anyOf"][0].items()
    assert body["beam_size"]["anyOf"][0]["maximum"] == 2
