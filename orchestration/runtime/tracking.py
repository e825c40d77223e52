"""MLflow records: one parent run per table invocation, one child run per trial.

The default store is MLflow 3's embedded SQLite file, ``mlflow.db`` in the project folder, always
passed as an *absolute* URI (inside Ray actors the working directory is Ray's session folder). A
tracking server comes from ``--tracking-uri`` or ``MLFLOW_TRACKING_URI``. Credentials in URIs are
never written to params, tags or logs (``redact``).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag, SourceType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_RUN_NOTE,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

from orchestration.runtime.file_lock import exclusive
from orchestration.runtime.redaction import redact, split_credentials
from orchestration.runtime.trial_files import MODEL_ARTIFACT

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # orchestration/runtime/tracking.py
TAG_PREFIX = "mgn."
_BATCH = 100  # MLflow's per-call limit on params
RESULT_SUFFIXES = (".md", ".csv", ".yaml", ".png")  # what a study publishes into results/
LOGGED_DIGITS = 6  # significant digits of every metric we log (``significant``)


LIST_ORDER_TAG = "row_order"  # mgn.row_order: where a run sits in the runs table's shared view
RUN_NAME_COLUMN = "attributes.`Run Name`"  # MLflow UI's column id
HEADLINE_CHARTS = ("mAP", "R1", "mINP", "loss")  # the curves a re-ID reader looks at first
# MLflow's chart view puts prefixed metrics (branch/..., rerank/...) before "Model metrics" unless told.
HEADLINE_SECTION_ID = "mgn-headline"
HEADLINE_SECTION = {"uuid": HEADLINE_SECTION_ID, "name": "Model metrics", "display": True, "isReordered": True,
                    "deleted": False, "isGenerated": True}  # fmt: skip
RUN_NAME_WIDTH = 420  # pixels: "ResNet-50+TP seed0 (resnet18)" and longer ensemble names, uncut
ENSEMBLE_KIND = "ensemble"  # mgn.kind of an ensemble row's run (orchestration.tables.ensembles)
RUNS_VIEW_ATTRIBUTES = ("Dataset", "Models", "Source", "Version", "User")  # MLflow's own columns
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."  # MLflow UI: a view opened by ?viewStateShareKey=
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3's experiment setting: what the UI opens on
MODEL_TRAINING = "custom_model_development"
LOCAL_UI = "http://127.0.0.1:5000"  # where ``mlflow ui`` serves a local store (docs/mlflow.md)


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached; the message says which and what to do."""


@contextlib.contextmanager
def _creating_store(uri: str) -> Iterator[None]:
    """One process of this machine at a time opens a fresh sqlite store: MLflow creates its tables on
    first use, and two studies doing it at once failed with "duplicate column name" (the lock lives in
    the temp folder, named by the file, so the project folder gains no file)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    digest = hashlib.sha256(uri.removeprefix("sqlite:///").encode()).hexdigest()[:16]
    with exclusive(Path(tempfile.gettempdir()) / f"mgn-sqlite-store-{digest}.lock"):
        yield


def resolve_tracking_uri(flag: str | None = None, project_root: Path = PROJECT_ROOT) -> str:
    """``flag``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<project>/mlflow.db``; local paths made absolute."""
    uri = (
        flag or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root.absolute() / 'mlflow.db'}"
    )
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///') :]).absolute()}"
    elif "://" not in uri:  # a bare folder: MLflow's file store (maintenance mode); keep it absolute
        uri = str(Path(uri).absolute())
    return uri


def _line_chart(metric: str, section: str) -> dict[str, object]:
    """One curve card of MLflow's chart view, as its UI writes a generated one (RunsChartsLineCardConfig)."""
    return {
        "uuid": f"mgn-chart-{metric}", "type": "LINE", "metricKey": metric, "displayName": metric,
        "metricSectionId": section, "isGenerated": True, "deleted": False, "runsCountToCompare": 10,
        "selectedXAxisMetricKey": "", "xAxisKey": "step", "xAxisScaleType": "linear", "scaleType": "linear",
        "yAxisKey": "metric", "yAxisExpressions": [], "range": {}, "lineSmoothness": 0, "ignoreOutliers": False,
        "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True,
    }  # fmt: skip


def list_order(table: str, row: int | None = None, suffix: str = "") -> str:
    """The ``mgn.row_order`` tag: a study's parent is its table key (``table5``) and its trials follow it
    in table order (``table5 03``; an ensemble right after its last member, ``table5 04e``), so a view
    sorted by the tag shows each table's parent heading its rows, tables in the paper's order."""
    return table if row is None else f"{table} {row:02d}{suffix}"


def significant(value: float, digits: int = LOGGED_DIGITS) -> float:
    """``value`` to ``digits`` significant digits: what a logged figure means. An R1 of 26 in 153 queries
    is 16.9935 in the UI, not 16.99346405228758; the features and losses behind every figure are
    float32 (about 7 digits), and the tables print one decimal. Counts below 10**digits stay exact."""
    return float(f"{float(value):.{digits}g}")


def is_single_machine_store(uri: str) -> bool:
    """An sqlite file or a file store: only the machine holding the file can write it."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def _check_sqlite(uri: str) -> None:
    """An sqlite store must be a file that outlives the study, in a folder that exists: MLflow would
    keep ``sqlite://`` in memory (every record lost at exit) and create a mistyped folder silently."""
    path = uri.removeprefix("sqlite:///")
    if path in ("", uri) or uri.rstrip("/") == "sqlite:":
        raise TrackingUnavailable(
            f"--tracking-uri {uri}: an in-memory store loses every record when the study ends; give a file "
            f"(sqlite:///{PROJECT_ROOT / 'mlflow.db'}) or a server (http://host:5000)"
        )
    folder = Path(path).parent
    if not folder.is_dir():
        raise TrackingUnavailable(
            f"--tracking-uri {uri}: the folder {folder} does not exist; create it, or give a path in a folder that does"
        )
    # SQLite writes the file and a journal beside it: either refused, the first record after Ray started failed.
    for needed, what in ((Path(path), "the file"), (folder, "its folder (SQLite's journal goes there)")):
        if needed.exists() and not os.access(needed, os.W_OK):
            raise TrackingUnavailable(
                f"--tracking-uri {uri}: {what} {needed} is read-only for this user; make it writable "
                "(chmod u+w), or give another store"
            )


DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def _unanswered(host: str, port: int, timeout: float) -> OSError | None:
    """Why nothing accepts a connection at ``host:port`` within ``timeout``; None when something does."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        return error


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when a tracking store does not answer or would lose records."""
    if uri.startswith("sqlite:"):
        _check_sqlite(uri)
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https"):
        host, port = parts.hostname or "localhost", parts.port or (443 if parts.scheme == "https" else 80)
        if (error := _unanswered(host, port, timeout)) is not None:
            raise TrackingUnavailable(
                f"MLflow tracking server {redact(uri)} is unreachable ({error}). Start it (e.g. `mlflow server "
                f"--host 127.0.0.1 --port {port}`), fix --tracking-uri / MLFLOW_TRACKING_URI, or unset them to "
                f"use the local store {PROJECT_ROOT / 'mlflow.db'}."
            ) from None
    database = parts.scheme.split("+", 1)[0]
    if database in DATABASE_PORTS:  # MLflow itself would retry a silent database for ~100 s
        host, port = parts.hostname or "localhost", parts.port or DATABASE_PORTS[database]
        if (error := _unanswered(host, port, timeout)) is not None:
            raise TrackingUnavailable(
                f"the {database} server of the tracking store {redact(uri)} does not answer at {host}:{port} "
                f"({error}). Start it, or fix --tracking-uri / MLFLOW_TRACKING_URI (clients of a cluster usually "
                "talk to an `mlflow server` over http:// rather than to its database)."
            ) from None
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # any failure of the store itself
        raise TrackingUnavailable(f"MLflow tracking store {redact(uri)} does not work: {error}") from None


def source_tags(command: str, description: str) -> dict[str, str]:
    """MLflow's standard columns, filled as its own clients fill them: Source (the script), its
    type, Version (the git commit), User, and the run's description."""
    script = next((part for part in command.split() if part.endswith(".py")), command.split()[0])
    commit = git_commit()
    return {
        MLFLOW_SOURCE_NAME: script,
        MLFLOW_SOURCE_TYPE: SourceType.to_string(
            SourceType.JOB if os.environ.get("RAY_JOB_ID") else SourceType.LOCAL
        ),
        **({MLFLOW_GIT_COMMIT: commit.removesuffix("-dirty")} if commit != "unknown" else {}),
        MLFLOW_USER: getpass.getuser(),
        MLFLOW_RUN_NOTE: description,
    }


GIT_COMMIT_ENV = "MGN_GIT_COMMIT"  # set by orchestration.submit: a job's copy of the code has no .git


def git_commit(project_root: Path = PROJECT_ROOT) -> str:
    """The checked-out commit, with ``-dirty`` when files differ from it; ``unknown`` outside git.
    The generated tables in ``results/`` do not count: regenerating them changes no experiment. A
    submitted job reports the commit it was submitted from (``$MGN_GIT_COMMIT``)."""
    if os.environ.get(GIT_COMMIT_ENV):
        return os.environ[GIT_COMMIT_ENV]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=project_root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
            cwd=project_root,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass(frozen=True)
class ChildRun:
    """One trial's run, as tables and figures read it."""

    run_id: str
    status: str  # FINISHED, FAILED, RUNNING, KILLED
    row: str  # the table row (``mgn.row``)
    seed: int
    metrics: Mapping[str, float]  # the latest value of each metric
    tags: Mapping[str, str] = field(default_factory=dict)
    seconds: float | None = None  # from start to end; None while it runs

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    @classmethod
    def of(cls, run: Run) -> ChildRun:
        tags = run.data.tags
        return cls(
            run.info.run_id,
            run.info.status,
            tags.get(f"{TAG_PREFIX}row", ""),
            int(tags.get(f"{TAG_PREFIX}seed", 0)),
            dict(run.data.metrics),
            dict(tags),
            (run.info.end_time - run.info.start_time) / 1000
            if run.info.end_time and run.info.start_time
            else None,
        )


@dataclass(frozen=True)
class ParentRun:
    """A study's parent run, as tables and reports read it: its tags without the ``mgn.`` prefix."""

    run_id: str
    experiment_id: str
    status: str  # FINISHED, FAILED, RUNNING, KILLED
    start_time_ms: int
    metrics: Mapping[str, float]  # the latest value of each metric (ensembles' figures)
    tags: Mapping[str, str]  # ours, ``mgn.`` left out: "profile", "dataset", "git_commit", "rows", ...

    @classmethod
    def of(cls, run: Run) -> ParentRun:
        ours = {k.removeprefix(TAG_PREFIX): v for k, v in run.data.tags.items() if k.startswith(TAG_PREFIX)}
        return cls(
            run.info.run_id,
            run.info.experiment_id,
            run.info.status,
            run.info.start_time,
            dict(run.data.metrics),
            ours,
        )


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No "Downloading artifacts" progress bars (one line of ours says what was fetched)."""
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


class Tracker:
    """The one door to MLflow, reading and writing: every call names its run; no global state."""

    def __init__(self, uri: str) -> None:
        # MLflow prints "View run ... at: <tracking URI>" when a run ends: with a server URI that
        # carries credentials, that line would put the password in every log.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.uri = uri
        with _creating_store(uri):  # MLflow creates a fresh store's tables as its client opens it
            self.client = MlflowClient(uri)

    @classmethod
    def from_env(cls) -> Tracker:
        """In trials and workers: the store the driver put in ``MLFLOW_TRACKING_URI`` (kept out of
        configs, which Ray writes to disk, because a server URI may carry credentials)."""
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise TrackingUnavailable(
                "MLFLOW_TRACKING_URI is not set in this Ray process: start grids with orchestration"
            )
        return cls(uri)

    def experiment(self, name: str) -> str:
        """The experiment's id, created (with an absolute artifact folder for local stores) if new;
        ``TrackingUnavailable`` when it was deleted (MLflow refuses runs in it). Two studies starting
        at once get the same one (the second finds the first's)."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            return self._create_experiment(name)
        if found.lifecycle_stage == "deleted":
            raise TrackingUnavailable(
                f"experiment '{name}' was deleted in {redact(self.uri)} (MLflow records no run in it): restore it "
                f"(mlflow experiments restore --experiment-id {found.experiment_id}), or give --experiment-name NEW"
            )
        if EXPERIMENT_KIND not in found.tags:  # an experiment made before the kind was set
            self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        return found.experiment_id

    def _create_experiment(self, name: str) -> str:
        location = None
        if self.uri.startswith("sqlite:") or "://" not in self.uri:
            db_folder = (
                Path(self.uri.removeprefix("sqlite:///")).parent
                if self.uri.startswith("sqlite:")
                else Path(self.uri)
            )
            location = (db_folder / "mlartifacts").absolute().as_uri()
        # The kind makes MLflow's UI open the experiment on its runs table (model training), not
        # on the GenAI overview of traces that MLflow 3 shows by default.
        try:
            return self.client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
            )
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            existing = self.client.get_experiment_by_name(name)  # another study made it first
            if existing is None:  # ... and it is gone again
                raise
            return existing.experiment_id

    def runs_url(self, experiment_id: str, view: str | None = None) -> str:
        """Where the experiment's runs table opens in MLflow's UI, in model-training mode (and in a
        view shared by ``share_runs_view``)."""
        server = split_credentials(self.uri)[0] if self.uri.startswith(("http://", "https://")) else LOCAL_UI
        shared = f"viewStateShareKey={view}&" if view else ""
        return (
            f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{shared}workflowType=machine_learning"
        )

    def share_runs_view(self, experiment_id: str, parent_run_id: str, metrics: list[str]) -> str:
        """A view of the runs table that MLflow's UI opens from a URL (its "share view", stored as an
        experiment tag): a study's runs in table order (each table's parent run heading its rows, see
        ``list_order``), with ``metrics``, data sets and models as columns, the Run Name column wide
        enough for the rows' names, and every run drawn in the charts (MLflow draws the first 10 by
        default, which cut the headline rows). Returns the key for ``runs_url``."""
        key = f"mgn-{parent_run_id[:12]}"
        columns = (
            [RUN_NAME_COLUMN]
            + [f"attributes.`{a}`" for a in RUNS_VIEW_ATTRIBUTES]
            + [f"metrics.`{m}`" for m in metrics]
            + [f"tags.`{TAG_PREFIX}row`"]
        )
        state = {
            "orderByKey": f"tags.`{TAG_PREFIX}{LIST_ORDER_TAG}`",
            "orderByAsc": True,
            "selectedColumns": columns[1:],
            "columnOrder": columns,  # MLflow applies widths only to the columns it is given an order for
            "columnWidths": {RUN_NAME_COLUMN: RUN_NAME_WIDTH},
            "runsHiddenMode": "SHOW_ALL",
            "runsExpanded": {parent_run_id: True},
            # The chart view opens on the headline curves; MLflow adds every other metric's chart after them.
            "compareRunSections": [HEADLINE_SECTION],
            "compareRunCharts": [_line_chart(metric, HEADLINE_SECTION_ID) for metric in HEADLINE_CHARTS],
            "isAccordionReordered": True,
        }
        self.client.set_experiment_tag(experiment_id, f"{SHARED_VIEW_PREFIX}{key}", json.dumps(state))
        return key

    def start_parent(
        self,
        experiment_id: str,
        name: str,
        tags: Mapping[str, str],
        system: Mapping[str, str] | None = None,
        under: str | None = None,
    ) -> str:
        """A study's run: our tags (prefixed) and MLflow's own columns (``source_tags``); nested
        ``under`` another (a sweep's table under the sweep's run) when given."""
        nested = {"mlflow.parentRunId": under} if under else {}
        ours = {LIST_ORDER_TAG: list_order(tags["table"])} if "table" in tags else {}
        ours.update(tags)
        run = self.client.create_run(
            experiment_id,
            run_name=name,
            tags={**(system or {}), **nested, **{TAG_PREFIX + k: v for k, v in ours.items()}},
        )
        return run.info.run_id

    def describe(self, run_id: str, text: str) -> None:
        """The run's description in the UI (MLflow's ``mlflow.note.content``)."""
        self.client.set_tag(run_id, MLFLOW_RUN_NOTE, text)

    def child(
        self,
        experiment_id: str,
        parent_id: str,
        trial: str,
        name: str,
        tags: Mapping[str, str],
        system: Mapping[str, str] | None = None,
    ) -> str:
        """The child run of ``trial`` under ``parent_id``: found again when a trial is resumed, so a
        trial never gets two runs."""
        existing = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and tags.`{TAG_PREFIX}trial` = '{trial}'",
            max_results=1,
        )
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            return run_id
        all_tags = {**(system or {}), "mlflow.parentRunId": parent_id, TAG_PREFIX + "trial": trial}
        all_tags.update({TAG_PREFIX + k: v for k, v in tags.items()})
        return self.client.create_run(experiment_id, run_name=name, tags=all_tags).info.run_id

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=items[start : start + _BATCH])

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None
    ) -> None:
        now = timestamp_ms or int(time.time() * 1000)
        items = [Metric(k, significant(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start : start + 1000])

    def log_onnx_model(
        self, run_id: str, onnx_path: str | Path, name: str = "model", registered_name: str | None = None
    ) -> None:
        """The trained embedding network as an MLflow Model named ``name`` (ONNX flavour: served and
        loaded through ``mlflow.pyfunc`` without unpickling anything), with its signature (images
        (N, 3, H, W) in [0, 1] -> embeddings (N, D)), an input example and its run's source and commit
        (not the Ray worker that logs it), optionally registered as a new version."""
        import mlflow
        import onnx
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        model = onnx.load(str(onnx_path))
        (height, width) = (d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[2:])
        example = np.random.default_rng(0).random((2, 3, height, width), dtype=np.float32)
        embedding = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
        signature = ModelSignature(
            Schema([TensorSpec(np.dtype(np.float32), (-1, 3, height, width), "images")]),
            Schema([TensorSpec(np.dtype(np.float32), (-1, embedding), "embedding")]),
        )
        run_tags = self.client.get_run(run_id).data.tags
        source = {k: run_tags[k] for k in (MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_GIT_COMMIT) if k in run_tags}
        # MLflow links a logged model to the active run: make it this run, for this call only.
        previous = mlflow.get_tracking_uri()
        mlflow.set_tracking_uri(self.uri)
        try:
            with mlflow.start_run(run_id=run_id):
                mlflow.onnx.log_model(
                    model, name=name, signature=signature, input_example=example, tags=source,
                    registered_model_name=registered_name, await_registration_for=0,
                    # What serving it needs, at the versions here (what MLflow would infer). Named,
                    # they are not inferred: that costs a Python subprocess that loads the model
                    # again, 2.2 of the 4.9 CPU-seconds this call took.
                    pip_requirements=[*mlflow.onnx.get_default_pip_requirements(), f"numpy=={np.__version__}"],
                )  # fmt: skip
        finally:
            self.client.update_run(run_id, "RUNNING")  # leaving the block ended it; the worker ends it
            mlflow.set_tracking_uri(previous)

    def model_file(self, uri: str, folder: str | Path) -> Path:
        """The weights file (``checkpoint/model.pt``) behind ``models:/NAME/VERSION`` or ``runs:/RUN_ID``
        (or ``runs:/RUN_ID/path/to/file``), downloaded into ``folder`` once: a run's artifacts never
        change, so a file already there is that one. ``LookupError`` names what is missing."""
        if uri.startswith("models:/"):
            name, _, version = uri.removeprefix("models:/").partition("/")
            if not version.isdigit():
                raise ValueError(f"{uri}: give a version number, e.g. models:/{name}/1")
            run_id, path = self.client.get_model_version(name, version).run_id, MODEL_ARTIFACT
            if run_id is None:
                raise LookupError(f"{uri} was registered from no run: pass its model file instead")
        elif uri.startswith("runs:/"):
            run_id, _, path = uri.removeprefix("runs:/").partition("/")
            path = path or MODEL_ARTIFACT
        else:
            raise ValueError(f"{uri}: not a models:/ or runs:/ URI")
        kept = Path(folder) / Path(path).name  # where MLflow puts a downloaded file
        if kept.is_file():
            return kept
        if path not in {
            a.path for a in self.client.list_artifacts(run_id, str(Path(path).parent).strip("."))
        }:
            raise LookupError(
                f"run {run_id} logged no {path}: its grid ran without --log-checkpoint. Run the row again with "
                "--log-checkpoint (or --register), or pass a model file"
            )
        Path(folder).mkdir(parents=True, exist_ok=True)
        with _quiet_downloads():
            return Path(self.client.download_artifacts(run_id, path, str(folder)))

    @contextlib.contextmanager
    def system_metrics(self, run_id: str, every_s: float = 10.0) -> Iterator[None]:
        """MLflow's system metrics (CPU, memory, disk, network; GPU utilisation and memory when
        NVIDIA's library finds one) logged to ``run_id`` every ``every_s`` seconds while inside, after
        the steps an earlier attempt logged.
        ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides the interval (tests)."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # A restarted attempt (node lost, driver resumed) goes on from the run's last step: starting
        # at 0 again wrote every step twice (16-184 duplicated rows per run).
        monitor = SystemMetricsMonitor(run_id, sampling_interval=every_s, resume_logging=True, tracking_uri=self.uri)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()

    def log_datasets(self, run_id: str, records: list[dict]) -> None:
        """``orchestration.runtime.inputs.dataset_records``: the Dataset column of the runs table."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [
            DatasetInput(
                Dataset(r["name"], r["digest"], "local", r["source"], profile=r["profile"]),
                [InputTag("mlflow.data.context", r["context"])],
            )
            for r in records
        ]
        self.client.log_inputs(run_id, datasets=inputs)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(TAG_PREFIX + k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def finish(self, run_id: str, failed: bool = False, killed: bool = False) -> None:
        self.client.set_terminated(run_id, "KILLED" if killed else "FAILED" if failed else "FINISHED")

    # Reading.

    def parent(self, run_id: str) -> ParentRun:
        return ParentRun.of(self.client.get_run(run_id))

    def experiment_name(self, experiment_id: str) -> str:
        return self.client.get_experiment(experiment_id).name

    def status(self, run_id: str) -> str:
        """FINISHED, FAILED, RUNNING or KILLED."""
        return self.client.get_run(run_id).info.status

    def last_step(self, run_id: str, metric: str) -> int:
        """The highest step at which ``metric`` was logged in the run; -1 if never."""
        return max((m.step for m in self.client.get_metric_history(run_id, metric)), default=-1)

    def child_runs(self, experiment_id: str, parent_id: str) -> list[ChildRun]:
        """Every trial run of a table invocation (newest first, as MLflow lists them); ensembles'
        runs, which hold copies of the parent's ensemble metrics, are not trials."""
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'", page_token=token
            )
            runs += [
                ChildRun.of(run) for run in page if run.data.tags.get(f"{TAG_PREFIX}kind") != ENSEMBLE_KIND
            ]
            token = page.token
            if not token:
                return runs

    def nested_parents(self, experiment_id: str, parent_id: str) -> list[ParentRun]:
        """The study runs nested under ``parent_id`` (a sweep's tables), oldest first."""
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and tags.`{TAG_PREFIX}kind` = 'table'",
            order_by=["attributes.start_time ASC"],
        )
        return [ParentRun.of(run) for run in runs]

    def latest_parent(self, experiment_name: str, table_key: str) -> str:
        """The most recent finished invocation of a table; ``LookupError`` saying what to run if none."""
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise LookupError(
                f"the store {redact(self.uri)} has no experiment '{experiment_name}': run the table first"
            )
        runs = self.client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.`{TAG_PREFIX}kind` = 'table' and tags.`{TAG_PREFIX}table` = '{table_key}' "
                "and attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise LookupError(f"no finished run of {table_key} in {redact(self.uri)}: run the table first")
        return runs[0].info.run_id

    def result_files(self, run_id: str) -> list[tuple[str, str]]:
        """The published results a study's parent run holds (tables, report, recipe, figures), and
        those of the study runs nested under it (a sweep's tables), as artifact paths per run."""
        runs = [run_id, *(p.run_id for p in self.nested_parents(self.client.get_run(run_id).info.experiment_id, run_id))]
        found = []
        for run in runs:
            for folder in ("", "figures"):
                found += [
                    (run, a.path) for a in self.client.list_artifacts(run, folder or None)
                    if not a.is_dir and Path(a.path).suffix in RESULT_SUFFIXES
                ]  # fmt: skip
        return found

    def download(self, run_id: str, artifact: str, folder: str | Path) -> Path | None:
        """A run's artifact, copied into ``folder``; None when the run has none of that name."""
        try:
            with _quiet_downloads():
                return Path(self.client.download_artifacts(run_id, artifact, str(folder)))
        except Exception:  # absent (an older run, a failed trial)
            return None
