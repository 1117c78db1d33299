"""CLI tables at 80 columns (a terminal's default): headers on one line, ids, keys and times
whole, less important columns left out first (cli.tables.fit_table)."""

from __future__ import annotations

import io

from rich.console import Console

from orchestrator.cli.tables import fit_table

CREDS_WHOLE, CREDS_DROP = ("role", "node", "public key"), ("expires", "issued", "node", "role")  # as `nexus creds list` has them
KEY = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAEHGBLPP7GQSVBDDQONN3IRA"  # 56 characters, as every user nkey


def render(table: object, width: int = 80) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None, soft_wrap=True)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    lines = text.rstrip("\n").split("\n")
    assert all(len(line) <= width for line in lines), text
    return lines


def test_job_list_keeps_ids_headers_and_times_whole_and_drops_the_least_important_column() -> None:
    columns = ["job_id", "status", "node", "exit_code", "duration_ms", "requested_at", "command"]
    rows = [
        ["j-18f3c2a1b2c-abcdef", "succeeded", "web-001", "0", "1234", "2026-12-06 02:54:44", "echo hello world"],
        ["j-18f3c2a1b2d-123456", "approval_required", "web-002", "", "", "2026-12-06 02:55:01", "rm -rf /srv/nexus-demo-old"],
    ]
    lines = render(fit_table(columns, rows, 80, drop=("duration_ms", "requested_at")))
    header = lines[0].split()
    assert header[:4] == ["job_id", "status", "node", "exit_code"] and "duration_ms" not in header, lines
    text = "\n".join(lines)
    for whole in ("j-18f3c2a1b2c-abcdef", "j-18f3c2a1b2d-123456", "approval_required", "web-002"):
        assert whole in text, text
    assert "…" not in text


def test_a_public_key_is_never_cut_and_times_fold_rather_than_squeeze_it() -> None:
    columns = ["name", "role", "node", "public key", "issued", "expires", "revoked"]
    rows = [
        ["orchestrator", "admin", "", KEY, "2026-12-06 02:54:44Z", "2027-12-06 02:54:44Z", ""],
        ["agent-web-1", "agent", "web-1", KEY[::-1], "2026-12-06 02:54:44Z", "", "2026-12-06 03:00:00Z"],
    ]
    lines = render(fit_table(columns, rows, 80, whole=CREDS_WHOLE.__contains__, drop=CREDS_DROP))
    text = "\n".join(lines)
    assert KEY in text and KEY[::-1] in text and "…" not in text, text
    assert "revoked" in lines[0] and "2026-12-06" in text, text


def test_without_revocations_the_empty_column_goes_first_and_the_role_stays() -> None:
    columns = ["name", "role", "node", "public key", "issued", "expires", "revoked"]
    rows = [["agent-local-1", "submitter", "", KEY, "2026-12-06 02:54:44Z", "2027-12-06 02:54:44Z", ""]]
    lines = render(fit_table(columns, rows, 80, whole=CREDS_WHOLE.__contains__, drop=CREDS_DROP))
    assert lines[0].split() == ["name", "role", "public", "key"], lines
    assert lines[1].split() == ["agent-local-1", "submitter", KEY], lines  # one space apart rather than no role


def test_pipeline_steps_show_job_ids_and_names_fold_between_words_only() -> None:
    columns = ["step_id", "status", "batch", "nodes", "jobs", "reason", "rollback_status", "started_at", "finished_at"]
    jobs = "p-18f3c2a1b2c-ab12-s1-0, p-18f3c2a1b2c-ab12-s1-1"
    rows = [
        ["build", "succeeded", "0", "web-001, web-002", jobs, "", "", "2026-12-06 02:54:44", "2026-12-06 02:54:50"],
        ["deploy", "waiting_approval", "", "", "", "waiting for approval of a production rollout", "", "", ""],
    ]
    drop = ("rollback_status", "finished_at", "started_at", "batch", "nodes")
    lines = render(fit_table(columns, rows, 80, drop=drop))
    assert lines[0].split() == ["step_id", "status", "jobs", "reason"], lines
    text = "\n".join(lines)
    assert "p-18f3c2a1b2c-ab12-s1-0" in text and "p-18f3c2a1b2c-ab12-s1-1" in text and "waiting_approval" in text, text
    assert "[" not in text and "{" not in text  # ids, not a raw JSON list
    for word in ["waiting", "for", "approval", "of", "a", "production", "rollout"]:
        assert any(word in line.split() for line in lines), (word, text)


def test_a_name_column_folds_at_spaces_not_inside_words() -> None:
    columns = ["pipeline_id", "name", "status", "requested_at", "finished_at", "reason"]
    rows = [["p-18f3c2a1b2c-ab12", "Local Web Deploy", "failed", "2026-12-06 02:54:44", "2026-12-06 02:55:44", "step build failed: exit 2"]]
    lines = render(fit_table(columns, rows, 80, drop=("finished_at", "requested_at")))
    text = "\n".join(lines)
    assert "p-18f3c2a1b2c-ab12" in text and "Local" in text and "Deploy" in text, text
    assert lines[0].split()[:3] == ["pipeline_id", "name", "status"], lines
