"""MLflow's server, opening in model-training mode on every page: ``mlflow ui --app-name mgn``.

MLflow 3.17's UI keeps its mode (GenAI or model training) in the page's URL (``?workflowType=``) or,
once the user flips the switch in the sidebar, in the browser's local storage
(``mlflow.workflowType_v1``); with neither it opens in GenAI mode. The URL a study prints carries
the mode, but the links inside the runs table (a run's name, its models) drop it, so in a fresh
browser the first click lands on a GenAI page ("Evaluations" breadcrumb, GenAI sidebar).

This app is MLflow's own server (its ``mlflow.app`` plugin point, as ``basic-auth`` uses) with one
line added to the page that loads the UI: when the browser holds no choice yet, it records model
training as the choice, before MLflow's code reads it. A choice the user makes with the switch is
kept and wins on later visits.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request

WORKFLOW_STORAGE_KEY = "mlflow.workflowType_v1"  # MLflow's useLocalStorage(key, version 1)
MODEL_TRAINING_MODE = '"machine_learning"'  # the stored value is JSON
DEFAULT_MODE_SCRIPT = (
    f"<script>try{{if(localStorage.getItem('{WORKFLOW_STORAGE_KEY}')===null)"
    f"localStorage.setItem('{WORKFLOW_STORAGE_KEY}','{MODEL_TRAINING_MODE}')}}catch(e){{}}</script>"
)


def with_model_training_default(page: str) -> str:
    """``page`` (the UI's ``index.html``) with the default-mode script as the first thing in its head."""
    if DEFAULT_MODE_SCRIPT in page or "<head>" not in page:
        return page
    return page.replace("<head>", "<head>" + DEFAULT_MODE_SCRIPT, 1)


def _default_mode(response: Response) -> Response:
    """Flask ``after_request`` hook: add the script to the UI page, leave every other response alone."""
    if response.status_code != 200 or response.mimetype != "text/html" or request.path.startswith("/ajax-api"):
        return response
    response.direct_passthrough = False  # send_from_directory streams the file; read it to edit it
    response.set_data(with_model_training_default(response.get_data(as_text=True)))
    response.headers.pop("ETag", None)  # the file's tag no longer names these bytes
    return response


def create_app() -> object:
    """The ``mlflow.app`` entry point ``mgn``: MLflow's Flask app with ``_default_mode``, served the way
    ``mlflow server`` serves its own (FastAPI around Flask under uvicorn, Flask under gunicorn/waitress)."""
    from mlflow.server import app

    flask_app: Flask = app
    if _default_mode not in flask_app.after_request_funcs.get(None, []):
        flask_app.after_request(_default_mode)
    if os.environ.get("_MLFLOW_SGI_NAME", "uvicorn") == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(flask_app)
    return flask_app
