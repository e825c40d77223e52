"""What a submitted job uploads: the project's code and the files its command names, never a
credential; the commit it was submitted from goes with it."""

from __future__ import annotations

from pathlib import Path

from orchestration import submit
from orchestration.runtime import tracking

PLANTED = {
    "mgn/__init__.py": "", "mgn/model.py": "x = 1\n", "orchestration/submit.py": "", "experiments/ablation_table5.py": "",
    "pyproject.toml": "[project]\n", "configs/mine.yaml": "train: {}\n", "README.md": "",
    # what must never leave the machine (143 files went in the hostile round, these among them)
    ".env": "AWS_SECRET_ACCESS_KEY=x", ".aws/credentials": "[default]", ".netrc": "machine x", "id_rsa": "KEY",
    "credentials.json": "{}", "mlflow.db-wal": "", "mlflow.db-shm": "", "mgn/keys/server.pem": "KEY",
    "orchestration/.env.local": "TOKEN=x", "mgn/__pycache__/model.cpython-311.pyc": "", "data/Market/x.jpg": "",
    "notes/private.txt": "",
}  # fmt: skip


def _project(root: Path) -> Path:
    for name, text in PLANTED.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_job_uploads_the_code_and_its_named_config_and_no_credential(tmp_path):
    root = _project(tmp_path / "project")
    files = submit.job_files(root, ["experiments/ablation_table5.py", "--config", "configs/mine.yaml"])
    assert files.files == (
        "configs/mine.yaml", "experiments/ablation_table5.py", "mgn/__init__.py", "mgn/model.py",
        "orchestration/submit.py", "pyproject.toml",
    )  # fmt: skip
    assert files.refused == ("mgn/keys/server.pem", "orchestration/.env.local")
    assert files.size == sum(len(PLANTED[f]) for f in files.files)
    summary = files.summary()
    assert summary.startswith("uploading 6 files (0.0 MB)") and "server.pem" in summary
    staged = submit.stage(root, files, tmp_path / "job")
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == list(
        files.files
    )


def test_the_job_carries_the_commit_it_was_submitted_from(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.GIT_COMMIT_ENV, raising=False)
    environment = submit.runtime_env("http://mlflow:5000", {}, tmp_path)
    commit = tracking.git_commit()
    assert environment["env_vars"][tracking.GIT_COMMIT_ENV] == commit != "unknown"
    assert environment["working_dir"] == str(tmp_path) and "excludes" not in environment
    # In the job (a copy without .git) the runs record it.
    monkeypatch.setenv(tracking.GIT_COMMIT_ENV, commit)
    assert tracking.git_commit(tmp_path) == commit


def test_a_finished_jobs_tables_are_copied_from_mlflow_or_their_place_is_named(tmp_path, capsys, monkeypatch):
    """A job's tables were written inside Ray's session folder on the head and vanished with the
    cluster; `submit --wait` copies them from the runs that hold them (a sweep's nested tables too)."""
    from orchestration.runtime.tracking import Tracker
    from orchestration.submit import fetch_results

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = tracker.experiment("MGN paper")
    sweep = tracker.start_parent(experiment, "paper", {"table": "paper", "kind": "sweep"})
    table = tracker.start_parent(experiment, "t5", {"table": "table5", "kind": "table"}, under=sweep)
    tracker.log_text(sweep, "# report\n", "paper.md")
    tracker.log_text(table, "| row | mAP |\n", "table5.md")
    figure = tmp_path / "table5_bars.png"
    figure.write_bytes(b"\x89PNG")
    tracker.log_artifact(table, figure, "figures")
    tracker.log_text(table, "{}", "per_query.json")  # not a result file
    log = f"...\nMLflow: experiment 'MGN paper', parent run {sweep}\nlocal mode, CPU\n"
    written = fetch_results(log, tracker.uri, tmp_path / "results")
    assert sorted(p.relative_to(tmp_path / "results").as_posix() for p in written) == [
        "figures/table5_bars.png", "paper.md", "table5.md"
    ]  # fmt: skip
    assert (tmp_path / "results" / "table5.md").read_text() == "| row | mAP |\n"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert fetch_results(log, None, tmp_path / "elsewhere") == []
    assert f"in MLflow experiment 'MGN paper', parent run {sweep}" in capsys.readouterr().out
