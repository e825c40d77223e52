"""Job submission waits, bounded, for a fresh head's job agent ("No available agent to submit job",
seen in the suite under load), then says what to check (no cluster needed: a client that refuses)."""

from __future__ import annotations

import pytest

from orchestration.submit import submit_when_the_agent_answers


class _Head:
    """A job server whose agent answers after ``refusals`` tries."""

    def __init__(self, refusals: int, error: str = "Request failed with status code 500: No available agent to submit job, please try again later..") -> None:  # fmt: skip
        self.refusals, self.error, self.calls = refusals, error, 0

    def submit_job(self, entrypoint: str, runtime_env: dict) -> str:
        self.calls += 1
        if self.calls <= self.refusals:
            raise RuntimeError(self.error)
        return "raysubmit_1"


def test_a_job_agent_that_answers_late_gets_the_job(capsys):
    head = _Head(refusals=2)
    assert submit_when_the_agent_answers(head, "python x.py", {}, wait_s=5, poll_s=0.01) == "raysubmit_1"
    assert head.calls == 3 and capsys.readouterr().err.count("waiting for the cluster's job agent") == 1


def test_an_agent_that_never_answers_is_a_bounded_wait_naming_what_to_check():
    with pytest.raises(TimeoutError, match=r"did not answer within 0 s.*ray status.*dashboard_agent.log"):
        submit_when_the_agent_answers(_Head(refusals=10**6), "python x.py", {}, wait_s=0.05, poll_s=0.01)


def test_other_submission_errors_are_not_waited_on():
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        submit_when_the_agent_answers(_Head(refusals=1, error="bad runtime_env"), "python x.py", {}, wait_s=5)
