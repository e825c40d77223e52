"""Bad input fails before any worker starts, with a message naming the problem and the fix."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from orchestration.tables.command import main
from tests.orchestration.conftest import grid_args


def _fails(capsys, table: str, args: list[str], *expected: str) -> str:
    assert main(table, args) == 2
    message = capsys.readouterr().err
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    return message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochz=3", ["unknown config key train.epochz", "valid keys here:", "train.epochs"]),
        ("train.epochs=three", ["train.epochs: expected an integer"]),
        ("train.epochs=-2", ["train.epochs=-2: must be >= 1"]),
        ("model.branches=[]", ["model.branches is empty"]),
        ("data.dataset=msmt17", ["data.dataset: 'msmt17' is not one of"]),
        ("data.k=1", ["triplet loss needs K >= 2"]),
    ],
)
def test_bad_config_values(capsys, workspace, override, expected):
    _fails(capsys, "table5", grid_args(workspace, "--set", override), *expected)


def test_a_part_count_the_feature_map_cannot_give(capsys, workspace):
    args = grid_args(workspace, "--set", "data.height=64", "--set", "model.branches=[1, 8]")
    _fails(capsys, "table5", args, "Part-8 branch", "data.height >= 128")


def test_sampling_without_replacement_needs_k_images_per_identity(capsys, workspace):
    args = grid_args(workspace, "--set", "data.sample_with_replacement=false", "--set", "data.k=8")
    _fails(
        capsys,
        "table5",
        args,
        "K=8 images per identity without replacement",
        "data.sample_with_replacement=true",
    )


def test_unknown_row(capsys, workspace):
    _fails(capsys, "table5", grid_args(workspace, rows=("MGN v2",)), "unknown Table 5 row", "valid rows are")


def test_unknown_key_in_a_config_file(capsys, workspace, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  epochs: 2\n  learning_rate: 0.1\n")
    _fails(
        capsys,
        "table5",
        grid_args(workspace, "--config", str(config)),
        "unknown config key train.learning_rate",
    )


def test_missing_data_root_says_what_to_download(capsys, workspace, tmp_path):
    _fails(capsys, "table2", grid_args(workspace, "--data-root", str(tmp_path / "none")),
           "does not exist", "Download market1501", "Market-1501-v15.09.15")  # fmt: skip


def test_wrong_layout(capsys, workspace, tmp_path):
    (tmp_path / "Market-1501-v15.09.15" / "images").mkdir(parents=True)
    _fails(
        capsys,
        "table2",
        grid_args(workspace, "--data-root", str(tmp_path)),
        "not a Market-1501-style data set",
        "Expected layout",
    )


def test_corrupt_image_is_named(capsys, workspace, tmp_path):
    root = tmp_path / "mine"
    for split, names in {
        "bounding_box_train": [
            "0001_c1s1_000001_01",
            "0001_c2s1_000001_01",
            "0002_c1s1_000001_01",
            "0002_c2s1_000001_01",
        ],
        "bounding_box_test": ["0003_c1s1_000001_01"],
        "query": ["0003_c2s1_000001_00"],
    }.items():
        (root / split).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (32, 64)).save(root / split / f"{name}.jpg")
    (root / "bounding_box_train" / "0002_c2s1_000001_01.jpg").write_bytes(b"broken")
    args = grid_args(
        workspace, "--set", "data.dataset=custom", "--set", f"data.root={root}", "--set", "data.p=2"
    )
    _fails(capsys, "table5", args, "0002_c2s1_000001_01.jpg", "data.skip_bad_images=true")


def test_missing_cuhk03_split_file(capsys, workspace, tmp_path):
    (tmp_path / "images_labeled").mkdir()
    Image.new("RGB", (16, 32)).save(tmp_path / "images_labeled" / "1_001_1_01.png")
    _fails(capsys, "table4", grid_args(workspace, "--data-root", str(tmp_path), rows=("MGN (labeled)",)),
           "cuhk03_new_protocol_config_labeled.mat is missing")  # fmt: skip


def test_unreachable_tracking_server(capsys, workspace):
    args = grid_args(workspace)
    args[args.index("--tracking-uri") + 1] = "http://user:s3cret@127.0.0.1:9"
    message = _fails(capsys, "table5", args, "MLflow tracking server", "unreachable", "mlflow server")
    assert "s3cret" not in message  # the password is redacted


def test_unreachable_ray_address(capsys, workspace):
    _fails(
        capsys,
        "table5",
        grid_args(workspace, "--address", "127.0.0.1:9"),
        "no Ray cluster answers at 127.0.0.1:9",
        "ray start --head",
    )


def test_seeds_must_be_positive_and_not_absurd(capsys, workspace):
    _fails(capsys, "table5", grid_args(workspace, "--seeds", "0"), "--seeds 0")
    _fails(capsys, "table5", grid_args(workspace, "--seeds", "1000000"), "--seeds 1000000: at most 100",
           "--set train.seed=FIRST")  # fmt: skip


def test_resume_without_a_grid(capsys, workspace):
    _fails(capsys, "table5", grid_args(workspace, "--resume"), "--resume: no grid of table5")


@pytest.mark.integration
def test_gpu_requested_where_none_exists(capsys, workspace):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _fails(capsys, "table5", grid_args(workspace, "--gpu"), "GPUs were asked for", "the Ray cluster has none")


def test_paper_profile_without_imagenet_weights(capsys, workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    args = grid_args(workspace, "--profile", "paper", "--set", "data.dataset=synthetic")
    _fails(
        capsys, "table5", args, "ImageNet weights for resnet50", "resnet50-0676ba61.pth", "model.init=random"
    )


def test_negative_max_failures_would_retry_a_deterministic_error_forever(capsys, workspace):
    _fails(
        capsys, "table5", grid_args(workspace, "--max-failures", "-1"), "--max-failures -1", "retried forever"
    )


@pytest.mark.integration
def test_a_trial_that_cannot_be_placed_is_refused_not_waited_for(capsys, workspace):
    """--cpus-per-worker 4 on a 2-CPU local cluster used to wait forever."""
    import signal

    signal.alarm(180)  # a regression fails this test instead of hanging the suite
    try:
        _fails(capsys, "table5", grid_args(workspace, "--cpus-per-worker", "4"), "needs 4 CPUs", "has 2")
    finally:
        signal.alarm(0)


def _recorded_grid(workspace, table: str, *plan_flags: str) -> str:
    """A grid folder as a driver leaves it (its state file), without training: returns its name."""
    from orchestration.runtime.storage import Storage
    from orchestration.study.state import StudyState
    from orchestration.tables.command import parser
    from orchestration.tables.planning import grid_folder, make_plan, record
    from orchestration.tables.registry import TABLES

    spec = TABLES[table]
    plan = make_plan(spec, parser(spec, spec.script).parse_args(grid_args(workspace, *plan_flags)))
    folder, _ = grid_folder(Storage.parse(workspace["storage"]), spec, plan.base, None)
    StudyState(table, "parent", "1", spec.experiment_name, f"python {spec.script} {' '.join(plan_flags)}",
               "2026-11-24", record(plan)).write(folder)  # fmt: skip
    return folder.name


def test_resume_refuses_a_changed_plan_and_shows_each_difference(capsys, workspace):
    name = _recorded_grid(workspace, "table5", "--set", "train.epochs=3")
    _fails(
        capsys, "table5", grid_args(workspace, "--set", "train.epochs=4", "--seeds", "2", "--resume", name),
        "plan differs from the grid's", "train.epochs: the grid has 3, this command 4",
        "seeds: the grid has [0], this command [0, 1]", "leave out --resume to start a new grid",
    )  # fmt: skip


def test_resume_refuses_another_tables_grid(capsys, workspace):
    name = _recorded_grid(workspace, "table2")
    _fails(capsys, "table5", grid_args(workspace, "--resume", name), "that folder is table2's, not table5's")


@pytest.mark.integration  # starts a Python subprocess
def test_a_grid_run_by_a_live_driver_is_refused_naming_its_pid(capsys, workspace):
    import json
    import socket
    import subprocess

    from orchestration.runtime.storage import Storage

    name = _recorded_grid(workspace, "table5")
    holder = subprocess.Popen(["sleep", "60"])  # a live process standing in for the first driver
    try:
        lock = {"host": socket.gethostname(), "pid": holder.pid, "started": "2026-11-24T10:00:00"}
        (Storage.parse(workspace["storage"]) / name / "driver.lock").write_text(json.dumps(lock))
        _fails(capsys, "table5", grid_args(workspace, "--resume", name), f"is being run by PID {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


def test_two_grids_started_in_the_same_second_get_two_folders(workspace):
    from mgn.recipes import smoke
    from orchestration.runtime.storage import Storage
    from orchestration.tables.planning import grid_folder
    from orchestration.tables.registry import TABLES

    storage = Storage.parse(workspace["storage"])
    first, _ = grid_folder(storage, TABLES["table5"], smoke(), None)
    second, _ = grid_folder(storage, TABLES["table5"], smoke(), None)
    assert first != second  # the names had only the table, profile, data set and second: equal


def test_results_dir_that_cannot_be_written_is_refused_before_compute(capsys, workspace, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _fails(
        capsys,
        "table5",
        grid_args({**workspace, "results": str(blocker / "results")}),
        "is a file, not a folder",
    )
    dangling = tmp_path / "results-link"
    dangling.symlink_to(tmp_path / "gone")  # passed the check, trained, then failed to publish
    _fails(capsys, "table5", grid_args({**workspace, "results": str(dangling / "t5")}),
           f"{dangling} is a link to {tmp_path / 'gone'}, which does not exist")  # fmt: skip


def test_a_relative_data_root_is_made_absolute_where_it_was_typed(workspace, tmp_path, monkeypatch):
    from orchestration.tables.command import parser
    from orchestration.tables.planning import make_plan
    from orchestration.tables.registry import TABLES

    monkeypatch.chdir(tmp_path)
    spec = TABLES["table5"]
    args = parser(spec, spec.script).parse_args(grid_args(workspace, "--set", "data.root=datasets/mine"))
    assert make_plan(spec, args).base.data.root == str(tmp_path / "datasets" / "mine")  # not Ray's cwd


def test_a_data_set_with_one_camera_is_refused_before_compute(capsys, workspace, tmp_path):
    root = tmp_path / "one-camera"
    for split, names in {
        "bounding_box_train": ["0001_c1s1_000001_01", "0001_c1s1_000002_01", "0002_c1s1_000001_01", "0002_c1s1_000002_01"],
        "bounding_box_test": ["0003_c1s1_000001_01", "0004_c1s1_000001_01"],
        "query": ["0003_c1s1_000002_00", "0004_c1s1_000002_00"],
    }.items():  # fmt: skip
        (root / split).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (32, 64)).save(root / split / f"{name}.jpg")
    args = grid_args(
        workspace, "--set", "data.dataset=custom", "--set", f"data.root={root}", "--set", "data.p=2"
    )
    _fails(
        capsys,
        "table5",
        args,
        "no query has an image of its identity from another camera",
        "cameras found: [1]",
    )


@pytest.mark.integration  # starts a Python subprocess
def test_a_paper_search_without_imagenet_weights_is_refused_before_ray_is_imported(workspace, tmp_path):
    """The recipe search runs the one pre-flight of every study: the landed search skipped it and
    failed inside its trials, after Ray and MLflow had started."""
    import json
    import os
    import subprocess
    import sys

    probe = (
        "import json, sys\n"
        "from orchestration.recipe_search.command import main\n"
        f"code = main({grid_args(workspace)[:6] + ['--profile', 'paper', '--set', 'base.data.dataset=synthetic', '--set', 'validation_ids=16']!r})\n"
        "print(json.dumps([code, 'ray' in sys.modules]))\n"
    )
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env)
    assert json.loads(run.stdout.strip().splitlines()[-1]) == [2, False], run.stderr
    assert "ImageNet weights for resnet50" in run.stderr and "model.init=random" in run.stderr
    assert not list((tmp_path / "ray_results").glob("recipe_search-*"))  # no study folder, no state, no lock
    assert not os.path.exists(workspace["uri"].removeprefix("sqlite:///"))  # MLflow's store was never opened


def test_a_truncated_state_file_is_named_not_a_traceback(capsys, workspace):
    from orchestration.runtime.storage import Storage
    from orchestration.study.state import STATE_FILE

    name = _recorded_grid(workspace, "table5")
    state = Storage.parse(workspace["storage"]) / name / STATE_FILE
    state.write_text(state.read_text()[:40])  # a full disk cut it while it was written
    _fails(capsys, "table5", grid_args(workspace, "--resume", name), f"its {STATE_FILE} is not a study's state",
           "/trials", "without --resume")  # fmt: skip


@pytest.mark.parametrize("content", ["", '{"host": "x", "pi'], ids=["empty", "cut"])
def test_a_lock_left_unreadable_by_a_killed_driver_is_taken_over(workspace, content):
    from orchestration.runtime.storage import Storage
    from orchestration.study.lock import LOCK_FILE, acquire, release

    folder = Storage.parse(workspace["storage"]) / _recorded_grid(workspace, "table5")
    (folder / LOCK_FILE).write_text(content)
    mine = acquire(folder)  # the landed code raised JSONDecodeError here
    assert (folder / LOCK_FILE).exists()
    release(folder, mine)
    assert not (folder / LOCK_FILE).exists()


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_concurrent_below_one_is_refused(capsys, workspace, value):
    _fails(
        capsys,
        "table5",
        grid_args(workspace, "--max-concurrent", value),
        f"--max-concurrent {value}: must be >= 1",
    )


def test_an_in_memory_or_folderless_sqlite_store_is_refused(capsys, workspace, tmp_path):
    for uri, message in [
        ("sqlite://", "an in-memory store loses every record"),
        (f"sqlite:///{tmp_path / 'no-such-folder' / 'mlflow.db'}", "no-such-folder does not exist"),
    ]:
        args = grid_args({**workspace, "uri": uri})
        _fails(capsys, "table5", args, message)
    assert not (tmp_path / "no-such-folder").exists()  # MLflow would have created it


def test_ctrl_c_while_the_synthetic_set_is_generated_is_one_line(capsys, workspace, tmp_path, monkeypatch):
    """Ctrl-C in the pre-flight was a traceback; it is exit 130 with one line, and no staging folder."""
    import mgn.data.synthetic as synthetic

    def interrupted(config, out_dir):
        (out_dir / "query").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setenv("MGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(synthetic, "generate", interrupted)
    assert main("table5", grid_args(workspace)) == 130
    err = capsys.readouterr().err
    assert "interrupted while preparing, before any training or record" in err and "Traceback" not in err
    assert not list((tmp_path / "cache" / "synthetic").glob(".generating-*"))


def test_a_driver_that_breaks_after_training_leaves_its_parent_failed_and_says_how_to_finish(
    capsys, workspace, monkeypatch
):
    """A node's runtime-env agent deleted the job's working folder after training: the driver died
    with a FileNotFoundError traceback and left its parent run RUNNING."""
    from mlflow.tracking import MlflowClient

    import orchestration.study.driver as driver
    from orchestration.runtime.cluster import Placement, TrialResources
    from orchestration.tables.grid import GridStudy

    def vanished(self, study_driver):
        raise FileNotFoundError(2, "No such file or directory", "/tmp/ray/session/runtime_resources/working_dir")

    placement = Placement(use_gpu=False, local=True, resources=TrialResources({"CPU": 1.0}, concurrency=1))
    monkeypatch.setattr(driver, "open_cluster", lambda *args, **kwargs: placement)
    monkeypatch.setattr(GridStudy, "run", vanished)
    assert main("table5", grid_args(workspace)) == 1
    err = capsys.readouterr().err
    assert "error: the study's driver stopped (FileNotFoundError" in err
    assert re.search(r"ablation_table5\.py .* --resume table5-smoke-synthetic-\S+", err)
    (parent,) = MlflowClient(workspace["uri"]).search_runs(
        [MlflowClient(workspace["uri"]).get_experiment_by_name("MGN Table 5").experiment_id]
    )
    assert parent.info.status == "FAILED"
