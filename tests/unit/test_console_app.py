"""The console's own pieces outside the browser: the fleet feed's view of a record, and the
static files layer (what it serves, compressed, and what it leaves to the API)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.app.console import feed_item
from orchestrator.console.assets import ConsoleAssets
from schemas import subjects
from schemas.events import ApiCalled, JobRequested, JobStarted
from schemas.pipelines import PipelineSucceeded
from schemas.records import Record

AT = datetime(2026, 1, 1, tzinfo=UTC)


def rec(subject: str, event: object, seq: int = 7) -> Record:
    return Record(seq=seq, subject=subject, stream_ts=AT, raw=b"{}", event=event)  # type: ignore[arg-type]


def test_the_feed_tells_a_jobs_status_after_each_event_and_skips_other_families() -> None:
    asked = feed_item(rec(subjects.job("j1", "requested"), JobRequested(command="echo hi", requested_by="ann")))
    assert asked is not None and (asked.entity, asked.id, asked.kind, asked.status, asked.seq) == ("job", "j1", "requested", "requested", 7)
    started = feed_item(rec(subjects.fact("j1", "started"), JobStarted(attempt=1, pid=4, node="n1")))
    assert started is not None and started.status == "running" and started.node == "n1"
    done = feed_item(rec(subjects.pipeline("p1", "succeeded"), PipelineSucceeded()))
    assert done is not None and (done.entity, done.id, done.status) == ("pipeline", "p1", None)
    call = ApiCalled(method="GET", path="/", status=200, allowed=True, duration_ms=1.0)
    assert feed_item(rec(subjects.api("r1", "called"), call)) is None


async def _get(app: ConsoleAssets, path: str, gzip_ok: bool = True, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"accept-encoding", b"gzip, br")] if gzip_ok else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers, "query_string": b""}
    await app(scope, receive, send)  # type: ignore[arg-type]
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, b"".join(m.get("body", b"") for m in sent[1:])


async def test_console_files_are_served_compressed_and_everything_else_goes_to_the_api(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html>" + "<p>console</p>" * 100)
    (tmp_path / "assets" / "app-abc.js").write_text("console.log(1);" * 100)
    reached: list[str] = []

    async def api(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = ConsoleAssets(api, root=tmp_path)
    status, headers, body = await _get(app, "/")
    assert status == 200 and headers["content-encoding"] == "gzip" and b"console" in gzip.decompress(body)
    assert "default-src 'self'" in headers["content-security-policy"] and headers["cache-control"] == "no-cache"
    status, headers, body = await _get(app, "/console/assets/app-abc.js", gzip_ok=False)
    assert status == 200 and "content-encoding" not in headers and body.startswith(b"console.log")
    assert "immutable" in headers["cache-control"] and headers["content-type"].startswith("text/javascript")
    for missing in ("/console/../index.html", "/console/nope.js", "/console/assets/"):
        assert (await _get(app, missing))[0] == 404
    status, _, body = await _get(app, "/", method="HEAD")
    assert status == 200 and body == b""
    assert reached == []
    assert (await _get(app, "/api/v1/jobs"))[0] == 204 and (await _get(app, "/", method="POST"))[0] == 204
    assert reached == ["/api/v1/jobs", "/"]
