"""`POST /v1/translate` with `"stream": true`: server-sent events over real HTTP, one per text as the scheduler
finishes it, then `done`; input errors are still plain 4xx answers, and an error after the stream started is
an `error` event."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.service_support import STOPPED_BY_SIGTERM, ServerProcess, metric, models_dir  # noqa: F401 - models_dir is a fixture

TEXTS = ["Open the file.", "", "12 345", "Close the window. Click OK.\n\nSelect the cell range.",
         " ".join(["Choose the new green window and open the file on the table and the menu."] * 6), "Click OK."]


def events(response: httpx.Response) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a server-sent event stream."""
    parsed = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        parsed.append((fields["event"], json.loads(fields["data"])))
    return parsed


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):  # noqa: F811
    with ServerProcess(models_dir, tmp_path_factory.mktemp("stream") / "server.log") as process:
        yield process.wait_ready()
        assert process.terminate() in STOPPED_BY_SIGTERM, process.output()


def test_the_stream_delivers_every_text_once_with_its_index_then_done(server):
    texts = [text for text in TEXTS if text]
    body = {"text": texts, "source": "en", "target": "de", "beam_size": 4, "stream": True}
    response = httpx.post(server.url + "/v1/translate", json=body, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    received = events(response)
    assert [name for name, _ in received] == ["translation"] * len(texts) + ["done"]
    assert received[-1][1] == {"model": "en-de", "texts": len(texts)}
    by_index = {data["index"]: data for _, data in received[:-1]}
    assert sorted(by_index) == list(range(len(texts)))  # each text exactly once
    plain = httpx.post(server.url + "/v1/translate", json={**body, "stream": False}, timeout=60).json()["translations"]
    for i, expected in enumerate(plain):
        assert {k: v for k, v in by_index[i].items() if k != "index"} == expected
    assert by_index[texts.index("12 345")]["sentences"] == 0 and "\n\n" in by_index[texts.index(TEXTS[3])]["text"]


def test_a_client_that_leaves_mid_stream_is_counted_as_disconnected(server):
    before = metric(httpx.get(server.url + "/metrics").text, "translator_requests_rejected_total", reason="disconnected")
    body = {"text": [f"Open the file number {i} and save it again." for i in range(64)], "source": "en", "target": "de",
            "beam_size": 4, "stream": True}
    with httpx.stream("POST", server.url + "/v1/translate", json=body, timeout=60) as response:
        next(response.iter_lines())  # the first event arrives; then the client goes away
    deadline = time.monotonic() + 30
    while metric(httpx.get(server.url + "/metrics").text, "translator_requests_rejected_total", reason="disconnected") == before:
        assert time.monotonic() < deadline, "the disconnect was never counted"
        time.sleep(0.2)


def test_input_errors_are_still_plain_answers(server):
    response = httpx.post(server.url + "/v1/translate", json={"text": ["Open.", ""], "source": "en", "target": "de",
                                                              "stream": True}, timeout=30)
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    response = httpx.post(server.url + "/v1/translate", json={"text": "Open.", "source": "en", "target": "xx",
                                                              "stream": True}, timeout=30)
    assert response.status_code == 400 and "detail" in response.json()


def test_an_error_after_the_stream_started_is_an_event(models_dir, tmp_path):  # noqa: F811
    # A deadline far shorter than the long sentences take (each runs to the length cap, 383 beam-4 steps: 0.35 s
    # alone here, eight together 1.9 s): the quick text arrives, the long ones fail as an event.
    long_sentence = " and ".join(["open the green file on the table"] * 31) + "."
    with ServerProcess(models_dir, tmp_path / "server.log", TRANSLATOR_REQUEST_DEADLINE_S="0.3") as process:
        server = process.wait_ready()
        body = {"text": ["Click OK."] + [long_sentence] * 8, "source": "en", "target": "de", "beam_size": 4,
                "stream": True}
        received = events(httpx.post(server.url + "/v1/translate", json=body, timeout=60))
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert process.terminate() in STOPPED_BY_SIGTERM
    assert 'translator_requests_rejected_total{reason="deadline"} 1.0' in metrics  # counted like a JSON answer
    assert received[0][0] == "translation" and received[0][1]["index"] == 0
    assert received[-1][0] == "error" and received[-1][1]["status"] == 503 and "deadline" in received[-1][1]["detail"]


def test_a_text_that_ends_early_is_streamed_before_a_longer_one_in_its_batch(models_dir, tmp_path):  # noqa: F811
    # One length bucket, so both sentences share a batch: the short one's event comes the step it ends, first,
    # although it is the second text and the batch runs on for the long one.
    long_text = ("Select the cells that you want to copy, then choose Edit - Copy and paste them into another sheet "
                 "of the document, where the formulas are adjusted to their new position.")
    with ServerProcess(models_dir, tmp_path / "server.log", TRANSLATOR_LENGTH_BUCKETS="128") as process:
        server = process.wait_ready()
        body = {"text": [long_text, "Click OK."], "source": "en", "target": "de", "stream": True}
        received = events(httpx.post(server.url + "/v1/translate", json=body, timeout=60))
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert process.terminate() in STOPPED_BY_SIGTERM
    assert "translator_batch_size_count 1.0" in metrics and "translator_batch_size_sum 2.0" in metrics
    assert [(name, data.get("index")) for name, data in received] == [("translation", 1), ("translation", 0), ("done", None)]
