"""run_trial on a trial whose done.json was written before the driver died (Tune still thought it
unfinished): it reports that result, trains nothing, and closes the run as finished."""

from __future__ import annotations

import dataclasses
import json

from mgn.recipes import smoke
from orchestration.runtime.storage import Storage
from orchestration.runtime.tracking import Tracker
from orchestration.runtime.trial import TrialSetup, TrialSpec, run_trial


class _Context:
    def get_trial_id(self) -> str:
        return "abc_00000"


def test_a_trial_found_done_reports_its_result_and_closes_its_run_finished(tmp_path, monkeypatch):
    from ray import tune  # imported here: Ray's import at collection time would fix its auth mode

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = Tracker(uri)
    experiment = tracker.experiment("done before the driver died")
    parent = tracker.client.create_run(experiment).info.run_id
    setup = TrialSetup(table="table5", script="experiments/ablation_table5.py", experiment_id=experiment,
                       parent_run_id=parent, storage=str(tmp_path / "grid"), git_commit="0" * 12, use_gpu=False)  # fmt: skip
    # The attempt that trained it: its run, then done.json, then the driver died in Ray Train's
    # teardown and the attempt's last word was FAILED.
    run_id = tracker.child(experiment, parent, trial="MGN / seed 0", name="MGN seed0", tags={"row": "MGN"})
    tracker.finish(run_id, failed=True)
    result = {"epoch": 3, "mAP": 51.5}
    trial = TrialSpec(row="MGN", seed=0, config=smoke())
    trial.files(Storage(setup.storage)).done.write_text(json.dumps(result))
    reported = []
    monkeypatch.setattr(tune, "report", lambda metrics, **_: reported.append(metrics))
    monkeypatch.setattr(tune, "get_context", _Context)

    run_trial({"setup": setup.to_dict(), "trial": trial.to_dict()})

    assert reported == [result]
    assert tracker.status(run_id) == "FINISHED"
    assert [run.run_id for run in tracker.child_runs(experiment, parent)] == [run_id]  # no second run


def test_the_showcase_row_logs_its_model_without_being_asked(tmp_path):
    """The main job left the Models tab empty: a table's showcase row (its figures' network) is logged
    as an MLflow Model named by its row; other rows only with --log-checkpoint."""
    from orchestration.runtime.trial import worker_spec
    from orchestration.runtime.trial_files import TrialFiles
    from orchestration.tables.grid import GridStudy
    from tests.orchestration.test_paper_tables import _plan

    assert GridStudy(_plan("table5")).model_rows() == ("MGN",)
    assert GridStudy(_plan("table5", "--rows", "ResNet-50")).model_rows() == ()  # not in this run
    setup = TrialSetup(table="table5", script="experiments/ablation_table5.py", experiment_id="1",
                       parent_run_id="p", storage=str(tmp_path), git_commit="0" * 12, use_gpu=False,
                       model_rows=("MGN",))  # fmt: skip
    specs = {
        row: worker_spec(setup, trial, "r", TrialFiles.of(Storage(str(tmp_path)), row, 0))
        for row in ("MGN", "ResNet-50")
        for trial in [TrialSpec(row=row, seed=0, config=smoke())]
    }
    assert specs["MGN"].log_checkpoint and specs["MGN"].model_name == "mgn-table5-mgn"
    assert not specs["ResNet-50"].log_checkpoint and specs["MGN"].registered_name is None
    asked = dataclasses.replace(setup, log_checkpoint=True, model_rows=())
    assert worker_spec(asked, TrialSpec(row="ResNet-50", seed=0, config=smoke()), "r",
                       TrialFiles.of(Storage(str(tmp_path)), "ResNet-50", 0)).log_checkpoint  # fmt: skip
    stored = TrialSetup(**{**setup.to_dict(), "model_rows": ["MGN"]})  # as Tune hands it back
    assert json.loads(json.dumps(stored.to_dict()))["model_rows"] == ["MGN"]


def test_a_moved_study_folder_is_where_its_trials_look(tmp_path, monkeypatch):
    """A grid folder moved before --resume: Tune's stored configs name the old folder, so the trials
    wrote their done markers there and every resume said "interrupted". A trial reads the folder the
    driver opened (MGN_STUDY_FOLDER, in every Ray process's environment), and finds its marker."""
    from ray import tune

    from orchestration.runtime.cluster import worker_env
    from orchestration.runtime.trial import STUDY_FOLDER_ENV

    assert worker_env("sqlite:///x.db", study_folder="s3://bucket/grids/g")[STUDY_FOLDER_ENV] == "s3://bucket/grids/g"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = Tracker(uri)
    experiment = tracker.experiment("moved")
    parent = tracker.client.create_run(experiment).info.run_id
    started_in, moved_to = tmp_path / "grid", tmp_path / "renamed-grid"
    setup = TrialSetup(table="table5", script="experiments/ablation_table5.py", experiment_id=experiment,
                       parent_run_id=parent, storage=str(started_in), git_commit="0" * 12, use_gpu=False)  # fmt: skip
    trial = TrialSpec(row="MGN", seed=0, config=smoke())
    run_id = tracker.child(experiment, parent, trial="MGN / seed 0", name="MGN seed0", tags={"row": "MGN"})
    result = {"epoch": 3, "mAP": 51.5}
    trial.files(Storage(str(moved_to))).done.write_text(json.dumps(result))  # finished, then the folder moved
    reported = []
    monkeypatch.setattr(tune, "report", lambda metrics, **_: reported.append(metrics))
    monkeypatch.setattr(tune, "get_context", _Context)
    monkeypatch.setenv(STUDY_FOLDER_ENV, str(moved_to))

    run_trial({"setup": setup.to_dict(), "trial": trial.to_dict()})

    assert reported == [result] and tracker.status(run_id) == "FINISHED"  # found done: nothing trained
    assert not started_in.exists()
