"""Credentials in a tracking URI never reach params, tags, logs or Ray's runtime environment."""

from __future__ import annotations

import pytest

from orchestration.runtime.tracking import redact, split_credentials


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("https://alice:s3cret@mlflow.internal/", "https://alice:***@mlflow.internal/"),
        ("https://ghp_token123@mlflow.internal", "https://***@mlflow.internal"),  # a token as the user
        ("https://alice:p@ss@mlflow.internal:5000", "https://alice:***@mlflow.internal:5000"),  # raw "@"
        ("https://mlflow.internal/?token=abc&x=1", "https://mlflow.internal/?token=***&x=1"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        # Query strings and fragments (the landed redact showed all of these):
        ("https://h/x?auth=abc&y=1", "https://h/x?auth=***&y=1"),
        ("https://h/x?sig=abc", "https://h/x?sig=***"),
        ("https://b.s3.amazonaws.com/k?X-Amz-Signature=abc&X-Amz-Credential=AKIA%2Fx&X-Amz-Date=20261203",
         "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Date=20261203"),
        ("https://h/#token=abc", "https://h/#token=***"),
        ("https://h/cb#access_token=abc&state=1", "https://h/cb#access_token=***&state=1"),
        ("https://h/?monkey=1&apiKey=2", "https://h/?monkey=1&apiKey=***"),  # a word, not a substring
    ],
)
def test_redact_hides_every_form_of_secret(uri, shown):
    assert redact(uri) == shown


def test_credentials_move_from_the_uri_to_mlflows_environment_variables():
    assert split_credentials("https://alice:p@ss@host:5000/x") == (
        "https://host:5000/x",
        {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "p@ss"},
    )
    assert split_credentials("https://tok%40en@host") == ("https://host", {"MLFLOW_TRACKING_TOKEN": "tok@en"})
    assert split_credentials("http://host:5000") == ("http://host:5000", {})
    assert split_credentials("sqlite:////a/b.db") == ("sqlite:////a/b.db", {})


def test_a_shared_cluster_is_not_given_credentials_through_rays_logs(monkeypatch):
    # Imported here: importing Ray at collection fixes its auth mode for the whole session
    # (test_submit.py needs Ray's token auth, set up before Ray is first imported).
    from orchestration.runtime.cluster import ClusterError, connect

    monkeypatch.setattr("orchestration.runtime.cluster.check_address", lambda address: None)
    with pytest.raises(ClusterError) as error:
        connect("10.0.0.1:6379", "https://alice:s3cret@mlflow.internal")
    message = str(error.value)
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in message and "s3cret" not in message
    assert "--tracking-uri https://mlflow.internal" in message
