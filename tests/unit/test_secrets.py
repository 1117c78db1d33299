"""Secrets (DESIGN.md §9): which env entries are secret, sealing, masking the output stream, the
decider's sealing for the node, and what views, the projection and the request builder keep."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.environment import DEFAULT_PATH, job_environment
from agent.masking import MASK_BYTES, OutputMasker, mask_text, maskable
from bus.sealing import SealedValueError, SealingKey, seal, seal_bound
from orchestrator.app.errors import SecretsUnprotected
from orchestrator.app.jobs import SubmitJob, job_request
from orchestrator.core import decide
from orchestrator.core.decide import CannotSeal, Fleet
from orchestrator.core.job_fold import requested
from orchestrator.core.views import JobStatus, JobView
from orchestrator.secrets import RequestSecrets, redact_record
from schemas import codec, subjects
from schemas.events import JobAssigned, JobDispatch, JobRejected, JobRequested, NodeHeartbeat
from schemas.records import Record
from schemas.secrets import MASK, Bound, OrchestratorKey, Redaction, is_sealed, masked, parse_patterns, shown_env

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

# ---------------------------------------------------------------- which entries are secret


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DB_PASSWORD", True),
        ("db_password", True),  # names compare case-insensitively
        ("GITHUB_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("APP_SECRET", True),
        ("SSH_PRIVATE_KEY", True),
        ("PG_CONNECTION_STRING", True),
        ("PASSWORD", False),  # the patterns want a prefix: `*_PASSWORD`
        ("PASSWORD_HINT", False),
        ("TOKENS_USED", False),
        ("PATH", False),
    ],
)
def test_default_patterns_are_buildkites(name: str, secret: bool) -> None:
    assert Redaction().matches(name) is secret


def test_configured_patterns_add_globs_and_question_marks_match_one_character() -> None:
    r = Redaction(patterns=parse_patterns(" *_PASSWORD , API_KEY?,, "))
    assert r.patterns == ("*_PASSWORD", "API_KEY?")
    assert r.matches("API_KEY2") and not r.matches("API_KEY") and not r.matches("API_KEY22")
    assert not r.matches("X_TOKEN")  # not in this list
    assert Redaction(patterns=("A.B",)).matches("A.B") and not Redaction(patterns=("A.B",)).matches("AxB")  # literal dots


def test_secret_names_by_pattern_by_seal_and_by_name() -> None:
    env = {"DB_PASSWORD": "x", "PLAIN": "y", "BLOB": "sealed:v1:AAAA", "MINE": "z"}
    assert Redaction().secret_names(env, ["MINE"]) == ["BLOB", "DB_PASSWORD", "MINE"]
    assert Redaction().clear_secrets(env, ["MINE"]) == ["DB_PASSWORD", "MINE"]
    assert masked(env, ["MINE"]) == {**env, "MINE": MASK}


def test_shown_env_masks_what_any_payload_holds() -> None:
    env: dict[str, object] = {"DB_PASSWORD": "hunter2", "X": "sealed:v1:QQ==", "N": 3, "OK": "fine", "MINE": "v"}
    assert shown_env(env, ["MINE", 7]) == {"DB_PASSWORD": MASK, "X": MASK, "N": MASK, "OK": "fine", "MINE": MASK}


# ---------------------------------------------------------------- sealing


def test_sealing_round_trip_and_only_the_right_key_opens() -> None:
    key, other = SealingKey.generate(), SealingKey.generate()
    sealed = seal("hunter2 ünïcode", key.public_key)
    assert is_sealed(sealed) and "hunter2" not in sealed
    assert key.open(sealed) == "hunter2 ünïcode"
    assert seal("hunter2", key.public_key) != seal("hunter2", key.public_key)  # an ephemeral key per seal
    with pytest.raises(SealedValueError, match="another key"):
        other.open(sealed)
    with pytest.raises(SealedValueError, match="not sealed"):
        key.open("hunter2")
    with pytest.raises(SealedValueError, match="base64"):
        key.open("sealed:v1:!!!")
    with pytest.raises(SealedValueError, match="X25519"):
        seal("x", "AAAA")


# ---------------------------------------------------------------- masking the output


def _masked_in_pieces(secrets: tuple[bytes, ...], data: bytes, cuts: list[int]) -> bytes:
    m = OutputMasker(secrets)
    out = b""
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        out += m.feed(data[last:cut])
        last = cut
    return out + m.feed(data[last:]) + m.flush()


def test_a_secret_split_across_two_chunks_is_masked() -> None:
    m = OutputMasker([b"hunter2-abc"])
    first = m.feed(b"pw=hunter")
    assert first == b"pw=" and m.pending == len(b"hunter")  # could be the secret: held back
    assert m.feed(b"2-abc!\n") == MASK_BYTES + b"!\n"
    assert m.flush() == b""


def test_bytes_that_turn_out_not_to_be_a_secret_pass_unchanged() -> None:
    m = OutputMasker([b"hunter2"])
    assert m.feed(b"a hunt") == b"a " and m.feed(b"ing trip") == b"hunting trip" and m.flush() == b""
    m = OutputMasker([b"hunter2"])
    assert m.feed(b"the end: hunt") == b"the end: " and m.flush() == b"hunt"


def test_a_longer_secret_that_starts_like_a_shorter_one_is_masked_whole() -> None:
    secrets = maskable(["abcd", "abcdefgh"])
    assert secrets == (b"abcdefgh", b"abcd")
    assert _masked_in_pieces(secrets, b"<abcdefgh>", [5]) == b"<" + MASK_BYTES + b">"
    assert _masked_in_pieces(secrets, b"<abcdxy>", [5]) == b"<" + MASK_BYTES + b"xy>"


def test_short_values_are_not_masked_and_text_is_masked_whole() -> None:
    assert maskable(["1", "ab", "abc", "", "hunter2"]) == (b"hunter2",)
    assert mask_text("could not start hunter2 (hunter2)", (b"hunter2",)) == f"could not start {MASK} ({MASK})"


@settings(max_examples=300, deadline=None)
@given(
    secrets=st.lists(st.binary(min_size=4, max_size=12).filter(lambda b: b"*" not in b and b"\0" not in b), min_size=1, max_size=3),
    filler=st.lists(st.binary(max_size=20), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=8),
)
def test_masking_does_not_depend_on_how_the_output_is_cut(secrets: list[bytes], filler: list[bytes], cuts: list[int]) -> None:
    # The output: filler with the secrets in between; however it is cut into chunks, the
    # result is the one of masking it whole, and no secret survives.
    data = b"".join(f + secrets[i % len(secrets)] for i, f in enumerate(filler))
    ordered = tuple(sorted(set(secrets), key=lambda b: (-len(b), b)))
    whole = _masked_in_pieces(ordered, data, [])
    assert _masked_in_pieces(ordered, data, cuts) == whole
    for s in ordered:
        assert s not in whole.replace(MASK_BYTES, b"\0")


# ---------------------------------------------------------------- the job's environment


def test_a_job_gets_a_minimal_environment_not_the_agents() -> None:
    own = {"PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_TIME": "C", "AWS_SECRET_ACCESS_KEY": "agent's", "HTTP_PROXY": "p"}
    env = job_environment(own, {"NEXUS_JOB_ID": "j1"}, {"A": "1", "PATH": "/job"}, pass_env=("HTTP_PROXY",))
    assert env == {"PATH": "/job", "HOME": "/root", "LANG": "C.UTF-8", "LC_TIME": "C", "HTTP_PROXY": "p", "TERM": "xterm",
                   "NEXUS_JOB_ID": "j1", "A": "1"}  # fmt: skip
    assert job_environment({}, {}, {})["PATH"] == DEFAULT_PATH


# ---------------------------------------------------------------- the record: views and projection


def test_the_view_never_holds_a_secret_value() -> None:
    ev = JobRequested(command="true", env={"DB_PASSWORD": "clear!", "API": "sealed:v1:QUJD", "X": "1", "MINE": "m"}, secrets=["MINE"])
    view = requested("j1", ev, NOW, 1)
    assert view.env == {"DB_PASSWORD": MASK, "API": MASK, "X": "1", "MINE": MASK}
    assert view.secrets == ["API", "DB_PASSWORD", "MINE"]


def _record(subject: str, payload: bytes) -> Record:
    try:
        return Record(seq=1, subject=subject, stream_ts=NOW, raw=payload, event=codec.decode(subject, payload))
    except Exception as exc:
        return Record(seq=1, subject=subject, stream_ts=NOW, raw=payload, error=str(exc))


def test_the_projection_masks_secrets_that_came_in_clear_by_the_configured_patterns() -> None:
    payload = b'{"command": "true", "env": {"CUSTOM_CRED": "s3cr3t-value", "X": "1"}, "extra": true}'
    rec = _record(subjects.job("j1", "requested"), payload)
    kept = redact_record(rec, Redaction(patterns=("*_CRED",)))
    assert b"s3cr3t-value" not in kept.raw and msgspec.json.decode(kept.raw)["extra"] is True
    assert isinstance(kept.event, JobRequested) and kept.event.env["CUSTOM_CRED"] == MASK and kept.event.secrets == ["CUSTOM_CRED"]
    assert requested("j1", kept.event, NOW, 1).secrets == ["CUSTOM_CRED"]
    assert redact_record(rec, Redaction()) is rec  # not secret by the defaults: nothing to mask


def test_a_request_that_does_not_decode_keeps_no_secret_in_clear_either() -> None:
    rec = _record(subjects.job("j1", "requested"), b'{"env": {"DB_PASSWORD": "s3cr3t-value"}, "priority": "high"}')
    assert rec.event is None
    assert b"s3cr3t-value" not in redact_record(rec, Redaction()).raw


# ---------------------------------------------------------------- the request builder (CLI and API)


def test_requests_seal_secrets_to_the_orchestrators_key() -> None:
    orch = SealingKey.generate()
    key = OrchestratorKey(public_key=orch.public_key, redacted_vars=["*_PASSWORD", "*_CRED"])
    cmd = SubmitJob(command="true", env={"DB_PASSWORD": "pw-1", "X_CRED": "cred-2", "PLAIN": "p"}, secret_env={"ANY": "any-3"})
    req = job_request(cmd, NOW, key, requester="alice")
    assert req.env["PLAIN"] == "p" and req.secrets == ["ANY"]
    assert {n: orch.open_bound(req.env[n]) for n in ("DB_PASSWORD", "X_CRED", "ANY")} == {
        "DB_PASSWORD": Bound(value="pw-1", requester="alice"),
        "X_CRED": Bound(value="cred-2", requester="alice"),
        "ANY": Bound(value="any-3", requester="alice"),
    }
    assert all(req.env[n].startswith("sealed:v2:") for n in ("DB_PASSWORD", "X_CRED", "ANY"))
    assert b"pw-1" not in codec.encode(req)


def test_without_the_orchestrators_key_a_secret_is_refused_not_sent_in_clear() -> None:
    with pytest.raises(SecretsUnprotected, match="DB_PASSWORD"):
        job_request(SubmitJob(command="true", env={"DB_PASSWORD": "pw"}), NOW, None)
    with pytest.raises(SecretsUnprotected, match="unusable"):
        job_request(SubmitJob(command="true", secret_env={"A": "b"}), NOW, OrchestratorKey(public_key="AAAA"))
    assert job_request(SubmitJob(command="true", env={"PLAIN": "p"}), NOW, None).env == {"PLAIN": "p"}


# ---------------------------------------------------------------- the decider


class FakeSealer:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.keys: list[str] = []

    def seal_for(self, node_key: str) -> Mapping[str, str]:
        self.keys.append(node_key)
        return {n: f"sealed:v1:for-{node_key}" for n in self.names}


def _fleet(*beats: NodeHeartbeat) -> Fleet:
    return Fleet(views={}, heartbeats={b.node: b for b in beats}, ttl_s=10.0)


def _beat(node: str, key: str = "") -> NodeHeartbeat:
    return NodeHeartbeat(node=node, ts=NOW, tools=["bash"], max_jobs=2, sealing_key=key)


def _job(**kw: object) -> JobView:
    return JobView(
        job_id="j1", status=JobStatus.VALIDATED, command="env", env={"DB_PASSWORD": MASK, "X": "1"}, secrets=["DB_PASSWORD"], **kw
    )  # type: ignore[arg-type]


def test_the_dispatch_carries_secrets_sealed_to_the_chosen_nodes_key() -> None:
    sealer = FakeSealer(["DB_PASSWORD"])
    outs = decide.decide_job(_job(), _fleet(_beat("old"), _beat("n1", "KEY1")), NOW, decide.Context(sealer=sealer))
    assert [type(o.event) for o in outs] == [JobAssigned, JobDispatch]
    dispatch = outs[1].event
    assert isinstance(dispatch, JobDispatch) and outs[1].subject == subjects.dispatch("j1", "n1")
    assert dispatch.env == {"DB_PASSWORD": "sealed:v1:for-KEY1", "X": "1"} and sealer.keys == ["KEY1"]


def test_no_node_with_a_sealing_key_means_a_clear_rejection() -> None:
    outs = decide.decide_job(_job(), _fleet(_beat("old")), NOW, decide.Context(sealer=FakeSealer(["DB_PASSWORD"])))
    assert len(outs) == 1 and isinstance(outs[0].event, JobRejected)
    assert outs[0].event.code == "no_sealing_key" and "DB_PASSWORD" in outs[0].event.reason


def test_secrets_not_at_hand_wait_and_unopenable_ones_reject() -> None:
    fleet = _fleet(_beat("n1", "KEY1"))
    assert decide.decide_job(_job(), fleet, NOW, decide.Context(sealer=None)) == []

    class Broken:
        def seal_for(self, node_key: str) -> Mapping[str, str]:
            raise CannotSeal("secret DB_PASSWORD cannot be opened")

    outs = decide.decide_job(_job(), fleet, NOW, decide.Context(sealer=Broken()))
    assert isinstance(outs[0].event, JobRejected) and outs[0].event.code == "secret_unreadable"


def test_request_secrets_open_ours_and_seal_clear_ones_for_the_node() -> None:
    orch, node = SealingKey.generate(), SealingKey.generate()
    values = {"A": seal_bound("from-client", orch.public_key, requester="alice"), "B": "came-in-clear",
              "C": seal_bound("for-the-job", orch.public_key, job="j1")}  # fmt: skip
    secrets = RequestSecrets(orch, values, job_id="j1", requester="alice")
    sealed = secrets.seal_for(node.public_key)
    assert {n: node.open(v) for n, v in sealed.items()} == {"A": "from-client", "B": "came-in-clear", "C": "for-the-job"}
    assert all(v.startswith("sealed:v1:") for v in sealed.values())  # for the node alone: the dispatch is signed for it
    stranger = RequestSecrets(orch, {"A": seal_bound("x", SealingKey.generate().public_key, requester="alice")}, requester="alice")
    with pytest.raises(CannotSeal, match="older orchestrator key"):
        stranger.seal_for(node.public_key)


@pytest.mark.parametrize(
    ("value", "job_id", "requester", "why"),
    [
        (lambda k: seal_bound("s", k, requester="alice"), "j2", "mallory", "sealed for 'alice', and this job's requester is 'mallory'"),
        (lambda k: seal_bound("s", k, requester="alice"), "j2", None, "this job's requester is no one (an unsigned request)"),
        (lambda k: seal_bound("s", k, job="j1"), "j2", "alice", "sealed for job 'j1', not this one"),
        (lambda k: seal("s", k), "j1", "alice", "sealed for no one in particular (sealed:v1:)"),
    ],
)
def test_a_sealed_value_copied_into_someone_elses_request_is_refused(
    value: Callable[[str], str], job_id: str, requester: str | None, why: str
) -> None:
    """Anyone who can read the log can copy a sealed value into a request of their own: the
    orchestrator opens it only for the requester or the job it was sealed for."""
    orch, node = SealingKey.generate(), SealingKey.generate()
    secrets = RequestSecrets(orch, {"DB_PASSWORD": value(orch.public_key)}, job_id=job_id, requester=requester)
    with pytest.raises(CannotSeal, match=re.escape(why)):
        secrets.seal_for(node.public_key)


def test_bound_values_say_for_whom_and_need_someone() -> None:
    key = SealingKey.generate()
    assert key.open_bound(seal_bound("v", key.public_key, requester="a", job="j")) == Bound(value="v", requester="a", job="j")
    assert key.open_bound(seal("v", key.public_key)) == Bound(value="v")
    with pytest.raises(ValueError, match="requester or a job"):
        seal_bound("v", key.public_key)
    with pytest.raises(SealedValueError, match="not sealed"):
        key.open(seal_bound("v", key.public_key, requester="a"))  # the agent opens only what is sealed for the node


def test_each_line_of_a_secret_of_several_lines_is_masked_too() -> None:
    key = "-----BEGIN KEY-----\r\nZq9KeyLine07\nZq9KeyLine08\n  x\n-----END KEY-----\n"
    secrets = maskable([key])
    assert b"Zq9KeyLine07" in secrets and b"-----BEGIN KEY-----" in secrets and b"x" not in secrets
    m = OutputMasker(secrets)
    # `echo "$SSH_PRIVATE_KEY" | head -2`, in two reads: no line of it in clear.
    out = m.feed(b"-----BEGIN KEY-----\nZq9Key") + m.feed(b"Line07\ndone\n") + m.flush()
    assert out == MASK_BYTES + b"\n" + MASK_BYTES + b"\ndone\n"
    assert mask_text("bad key line: Zq9KeyLine08", secrets) == f"bad key line: {MASK_BYTES.decode()}"
