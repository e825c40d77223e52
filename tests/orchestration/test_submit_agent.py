"""Job submission waits, bounded, for a fresh head's job agent ("No available agent to submit job",
seen in the suite under load), then says what to check (no cluster needed: a client that refuses)."""

from __future__ import annotations

import pytest
import requests

from orchestration.submit import follow, submit_when_the_agent_answers


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


class _VanishingDashboard:
    """A job server that answers once, then is gone (the head restarted, a tunnel dropped)."""

    def __init__(self) -> None:
        self.calls = 0

    def get_job_status(self, job_id: str):
        from ray.job_submission import JobStatus

        self.calls += 1
        if self.calls > 1:
            raise requests.exceptions.ConnectionError("Connection refused")
        return JobStatus.RUNNING

    def get_job_logs(self, job_id: str) -> str:
        return "epoch 1/8\n"


def test_following_a_job_whose_dashboard_goes_away_is_one_line_with_how_to_reattach(capsys, monkeypatch):
    monkeypatch.setattr("orchestration.submit.time.sleep", lambda s: None)
    assert follow(_VanishingDashboard(), "raysubmit_7", timeout_s=60, address="http://head:8265") == 1
    out, err = capsys.readouterr()
    assert out == "epoch 1/8\n"
    assert (
        err.count("\n") == 1 and "lost the job server at http://head:8265 while following raysubmit_7" in err
    )
    assert "ray job logs --address http://head:8265 --follow raysubmit_7" in err and "Traceback" not in err
