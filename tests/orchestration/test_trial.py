"""run_trial on a trial whose done.json was written before the driver died (Tune still thought it
unfinished): it reports that result, trains nothing, and closes the run as finished."""

from __future__ import annotations

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
