"""The trace viewer is mounted at /ui for live solves on the served model: without an API key, on a backend that
takes concurrent calls; never with a key (a browser page sends none), and it stays out of the OpenAPI document."""

from __future__ import annotations

import httpx

from tests.server.harness import endless, serve


def test_ui_is_served_without_a_key_and_solves_stream_from_the_served_model() -> None:
    with serve(endless("42"), thread_safe=True) as s:
        page = httpx.get(f"{s.url}/ui/", timeout=30)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert not any(p.startswith("/ui") for p in httpx.get(f"{s.url}/openapi.json", timeout=30).json()["paths"])
        with httpx.stream("POST", f"{s.url}/ui/api/solve", json={"problem": "What is 6 times 7?",
                                                                 "strategy": "self-consistency:n_samples=2"},
                          timeout=60) as r:
            assert r.status_code == 200
            body = "".join(r.iter_text())
        assert body.count("event: trace") >= 2 and "event: result" in body and "event: error" not in body
        assert '"42"' in body.split("event: result", 1)[1]


def test_ui_is_not_mounted_with_an_api_key_or_a_backend_that_takes_one_call_at_a_time() -> None:
    with serve(endless("42"), api_key="k", thread_safe=True) as s:
        assert httpx.get(f"{s.url}/ui/", timeout=30).status_code in (401, 404)
    with serve(endless("42"), thread_safe=False) as s:
        assert httpx.get(f"{s.url}/ui/", timeout=30).status_code == 404
