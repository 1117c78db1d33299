"""One vocabulary: the HTTP API's camelCase names and the event log's snake_case names map in one place."""

from __future__ import annotations

import msgspec
import pytest

from orchestrator.api.models import CreateJobRequest, JobOut
from orchestrator.app.errors import ConflictingFields
from orchestrator.app.rows import decoded
from orchestrator.cli.common import plain
from orchestrator.core.views import JobView


def body(raw: bytes) -> CreateJobRequest:
    return msgspec.json.decode(raw, type=CreateJobRequest)


def test_the_api_takes_its_names_and_the_event_logs_names_for_the_same_fields() -> None:
    camel = body(b'{"command": "x", "nodeId": "n1", "timeoutSeconds": 5, "workingDir": "/srv", "prefer": {"zone": "a"}}')
    snake = body(b'{"command": "x", "node": "n1", "timeout_s": 5, "working_dir": "/srv", "prefer": {"zone": "a"}}')
    assert camel.command_for("ann") == snake.command_for("ann")
    cmd = camel.command_for("ann")
    assert (cmd.node, cmd.timeout_s, cmd.working_dir, cmd.prefer, cmd.requested_by) == ("n1", 5, "/srv", {"zone": "a"}, "ann")
    with pytest.raises(ConflictingFields, match="nodeId"):
        body(b'{"command": "x", "nodeId": "n1", "node": "n2"}').command_for("ann")


def test_job_out_is_the_read_model_without_secrets() -> None:
    shown = set(JobOut.__struct_fields__)
    assert shown - {"stream_endpoint"} < {f.name for f in msgspec.structs.fields(JobView)}
    assert "env" not in shown and {"prefer", "tests_passed", "first_seq"} <= shown
    assert "timeoutSeconds" in JobOut.__struct_encode_fields__ and "jobId" in JobOut.__struct_encode_fields__


def test_json_columns_are_decoded_once_and_the_cli_writes_attribute_names() -> None:
    row = decoded({"job_id": "j", "labels": '{"env": "prod"}', "nodes": '["a", "b"]', "command": '{"not": "json column"}'})
    assert row == {"job_id": "j", "labels": {"env": "prod"}, "nodes": ["a", "b"], "command": '{"not": "json column"}'}
    out = JobOut(job_id="j", status="queued", command="x", stream_endpoint="/s", timeout_s=3, labels={"camelKey": "v"})
    written = plain(out)
    assert written["timeout_s"] == 3 and written["labels"] == {"camelKey": "v"} and "stream_endpoint" in written
