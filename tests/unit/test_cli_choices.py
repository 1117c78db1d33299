"""Choices the CLI spells out (so that `nexus --help` need not import the read model) stay
equal to the values they stand for."""

from __future__ import annotations

import typing

from orchestrator.cli.creds import ROLE_NAMES
from orchestrator.cli.jobs import JobStatusName
from orchestrator.core.views import JobStatus
from orchestrator.trust.roles import ROLES


def test_jobs_status_choices_are_the_job_statuses() -> None:
    assert list(typing.get_args(JobStatusName)) == [s.value for s in JobStatus]


def test_creds_role_names_are_the_roles() -> None:
    assert ROLE_NAMES == ROLES
