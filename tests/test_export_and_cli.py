"""ONNX export equals PyTorch; the `mgn` command line on the embedded data, through subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mgn.checkpoint import load_model, save_model
from mgn.config_io import to_dict
from mgn.data import load_dataset
from mgn.data.loading import locate
from mgn.export import EmbeddingNetwork, export_onnx, onnx_max_difference
from mgn.training import fit
from tests.conftest import tiny_config

MGN_BIN = Path(sys.executable).parent / "mgn"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    config = tiny_config()
    result = fit(config, load_dataset(config.data))
    return save_model(result.model, to_dict(config), tmp_path_factory.mktemp("model") / "model.pt")


def mgn(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "mgn.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )
    if check:
        assert run.returncode == 0, run.stderr
    return run


def test_model_file_round_trip(model_file):
    model, config = load_model(model_file)
    assert not model.training and config.data.height == 64 and model.embedding_dim == 2048


def test_one_pass_over_image_and_mirror_equals_two_passes(model_file):
    """The exported network embeds an image and its mirror in one batch of 2N; that is the paper's
    flip average (§4.1) as two plain passes compute it."""
    model, config = load_model(model_file)
    torch.manual_seed(0)
    images = torch.rand(5, 3, config.data.height, config.data.width)
    network = EmbeddingNetwork(model, flip=True, normalize=False).eval()
    with torch.no_grad():
        x = (images - network.mean) / network.std
        plain = (model.embed(x) + model.embed(torch.flip(x, dims=[3]))) / 2
        batched = network(images)
    assert batched.shape == (5, model.embedding_dim)
    assert torch.allclose(batched, plain, atol=1e-5) and not torch.allclose(batched, model.embed(x), atol=1e-3)


@pytest.mark.parametrize(("flip", "normalize"), [(True, True), (False, False)])
def test_onnx_matches_pytorch(model_file, tmp_path, flip, normalize):
    model, config = load_model(model_file)
    network = EmbeddingNetwork(model, flip=flip, normalize=normalize)
    path = export_onnx(network, tmp_path / "mgn.onnx", config.data.height, config.data.width)
    torch.manual_seed(0)
    for batch in (1, 7):  # the batch dimension is dynamic
        images = torch.rand(batch, 3, config.data.height, config.data.width)
        assert onnx_max_difference(path, network, images) <= 1e-4


@pytest.mark.integration  # starts a Python subprocess
def test_cli_extract_eval_search_export(model_file, tmp_path):
    root = locate(tiny_config().data)
    query, gallery = tmp_path / "query.npz", tmp_path / "gallery.npz"
    assert "wrote" in mgn("extract", model_file, root / "query", "--out", query).stdout
    mgn("extract", model_file, root / "bounding_box_test", "--out", gallery)
    with np.load(query) as data:
        assert (
            data["features"].shape == (len(list((root / "query").iterdir())), 2048) and data["pids"].min() > 0
        )

    evaluated = mgn("eval", query, gallery, "--rerank").stdout.splitlines()
    assert (
        evaluated[0].startswith("R1 ") and "mAP" in evaluated[0] and evaluated[1].startswith("re-ranked R1")
    )

    image = sorted((root / "query").iterdir())[0]
    png = tmp_path / "ranks.png"
    found = mgn("search", model_file, image, gallery, "--top-k", "5", "--png", png).stdout.splitlines()
    assert len([line for line in found if line.strip()[:1].isdigit()]) == 5 and png.stat().st_size > 10_000

    onnx = tmp_path / "mgn.onnx"
    exported = mgn("export", model_file, onnx, "--check").stdout
    assert onnx.is_file() and "max |difference|" in exported


@pytest.mark.integration  # starts a Python subprocess
@pytest.mark.parametrize("command", ["extract", "eval", "search", "export"])
def test_every_command_explains_itself(command):
    text = mgn(command, "--help").stdout
    assert "example:" in text and f"mgn {command}" in text


@pytest.mark.integration  # starts a Python subprocess
def test_the_installed_entry_point():
    if not MGN_BIN.exists():
        pytest.skip("the package is not installed in this interpreter's environment")
    run = subprocess.run([str(MGN_BIN), "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "extract" in run.stdout and "export" in run.stdout


@pytest.mark.integration  # starts a Python subprocess
def test_bad_input_is_one_clear_line(model_file, tmp_path):
    missing = mgn("extract", tmp_path / "nope.pt", tmp_path, check=False)
    assert missing.returncode == 2 and "checkpoint" in missing.stderr and "nope.pt" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = mgn("extract", model_file, tmp_path / "empty", check=False)
    assert empty.returncode == 2 and "holds no images" in empty.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert "is not an MGN model" in mgn("export", junk, tmp_path / "x.onnx", check=False).stderr
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(
        a,
        features=np.zeros((2, 8)),
        pids=np.array([1, 2]),
        camids=np.array([0, 1]),
        paths=np.array(["x", "y"]),
    )
    np.savez(
        b,
        features=np.zeros((2, 4)),
        pids=np.array([1, 2]),
        camids=np.array([1, 0]),
        paths=np.array(["x", "y"]),
    )
    mismatch = mgn("eval", a, b, check=False)
    assert mismatch.returncode == 2 and "8-d, gallery 4-d" in mismatch.stderr
    assert "features file" in mgn("eval", a, tmp_path / "none.npz", check=False).stderr


def test_eval_refuses_non_finite_features_in_one_line(tmp_path, capsys):
    import numpy as np

    from mgn.cli import main as cli

    rng = np.random.default_rng(0)
    for name in ("query", "gallery"):
        features = rng.standard_normal((4, 8)).astype(np.float32)
        if name == "query":
            features[1, 2] = np.inf  # used to give exit 0 with metrics
        np.savez(tmp_path / f"{name}.npz", features=features, pids=np.array([1, 2, 3, 4]),
                 camids=np.array([0, 0, 0, 0]) if name == "query" else np.ones(4, int), paths=np.array(["a"] * 4))  # fmt: skip
    assert cli(["eval", str(tmp_path / "query.npz"), str(tmp_path / "gallery.npz")]) == 2
    err = capsys.readouterr().err
    assert "query features hold NaN or infinity" in err and len(err.strip().splitlines()) == 1


def _cli(capsys, *args: object) -> tuple[int, str, str]:
    from mgn.cli import main as cli

    try:
        code = cli([str(a) for a in args])
    except SystemExit as exit:  # argparse refusals and --version
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def _features(path: Path, n: int, pids: list[int], camids: list[int], dim: int = 8) -> Path:
    rng = np.random.default_rng(n)
    np.savez(path, features=rng.standard_normal((n, dim)).astype(np.float32), pids=np.array(pids),
             camids=np.array(camids), paths=np.array([f"{p:04d}_c{c + 1}s1_{i}.jpg" for i, (p, c) in enumerate(zip(pids, camids, strict=True))]))  # fmt: skip
    return path


def test_search_prints_the_ranking_its_picture_draws(model_file, tmp_path, capsys):
    from mgn.visualize import RANKING_RULE

    root = locate(tiny_config().data)
    gallery = tmp_path / "gallery.npz"
    assert _cli(capsys, "extract", model_file, root / "bounding_box_test", "--out", gallery)[0] == 0
    image = sorted((root / "query").iterdir())[0]  # <pid>_c<camera>: a labelled query
    code, out, _ = _cli(capsys, "search", model_file, image, gallery, "--top-k", "50")
    assert code == 0 and RANKING_RULE in out
    listed = [line.split()[-1] for line in out.splitlines() if line.strip()[:1].isdigit()]
    pid, camera = image.name.split("_")[0], image.name.split("_")[1][:2]
    same_camera_matches = [p for p in listed if Path(p).name.startswith(f"{pid}_{camera}")]
    assert listed and same_camera_matches == []  # dropped, as evaluation and the PNG drop them


def test_cli_refusals_are_one_clear_line(model_file, tmp_path, capsys):
    query = _features(tmp_path / "q.npz", 3, [1, 2, 3], [0, 0, 0])
    gallery = _features(tmp_path / "g.npz", 4, [1, 2, 3, 4], [1, 1, 1, 1])
    code, _, err = _cli(capsys, "eval", query, gallery, "--max-rank", "0")
    assert code == 2 and "--max-rank: 0 must be >= 1" in err
    code, _, err = _cli(capsys, "eval", query, gallery, "--max-rank", "1000000000")  # was 11.5 GB, then killed
    assert code == 2 and "the gallery has 4 images" in err and "--max-rank 4 or less" in err
    code, out, _ = _cli(capsys, "eval", query, gallery, "--rerank", "--k1", "100000", "--k2", "100000")
    assert code == 0 and "re-ranked" in out  # the whole ranking, as the published algorithm does
    code, _, err = _cli(capsys, "extract", model_file, tmp_path, "--out", "/dev/full")
    assert code == 2 and "a features file is NAME.npz (NumPy would write /dev/full.npz)" in err
    code, _, err = _cli(capsys, "search", model_file, tmp_path / "x.jpg", gallery, "--top-k", "-3")
    assert code == 2 and "--top-k: -3 must be >= 1" in err
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(gallery.read_bytes()[:100])
    no_rows = _features(tmp_path / "none.npz", 0, [], [])
    for bad in (empty, truncated, no_rows):
        code, _, err = _cli(capsys, "eval", query, bad)
        assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1, err
    junk = tmp_path / "junk.pt"
    torch.save({"model": {"w": torch.ones(1)}, "config": object()}, junk)  # a pickled object inside
    code, _, err = _cli(capsys, "export", junk, tmp_path / "x.onnx")
    assert code == 2 and "is not an MGN model" in err and "weights_only" not in err
    model, config = load_model(model_file)
    other = tmp_path / "other.pt"
    torch.save({"model": {"stem.weight": torch.ones(3)}, "config": to_dict(config), "num_classes": 8}, other)
    code, _, err = _cli(capsys, "export", other, tmp_path / "x.onnx")
    assert code == 2 and "weights do not fit the network" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = _cli(capsys, "export", model_file, blocker / "mgn.onnx")
    assert code == 2 and "is a file, not a folder" in err


def test_eval_json_and_version(tmp_path, capsys):
    import json

    query = _features(tmp_path / "q.npz", 3, [1, 2, 3], [0, 0, 0])
    gallery = _features(tmp_path / "g.npz", 4, [1, 2, 3, 4], [1, 1, 1, 1])
    code, out, _ = _cli(capsys, "eval", query, gallery, "--json", "--rerank")
    result = json.loads(out)
    assert code == 0 and set(result) == {"plain", "re-ranked"} and result["plain"]["queries"] == 3
    assert 0 <= result["plain"]["mAP"] <= 100
    code, out, _ = _cli(capsys, "--version")
    assert code == 0 and out.startswith("mgn ")
    code, out, _ = _cli(capsys, "--help")
    assert "``" not in out


def test_the_library_cli_reads_files_and_names_the_command_that_reads_model_uris(capsys, tmp_path):
    from mgn.cli import main as cli

    assert cli(["export", "models:/mgn-table5-mgn/1", str(tmp_path / "mgn.onnx")]) == 2
    error = capsys.readouterr().err
    assert "models:/mgn-table5-mgn/1" in error and "the `mgn` command installed with the project" in error


@pytest.mark.integration  # starts a Python subprocess
def test_the_command_line_is_parsed_before_torch_is_imported():
    """``mgn --help`` and a mistyped option answer before the 4-5 s of torch and torchvision
    (benchmarks/cli_startup.py times it); a command imports them once its arguments parse."""
    probe = (
        "import json, sys\n"
        "from orchestration.runtime.model_uris import main\n"
        "try:\n"
        "    main(['eval', 'q.npz', 'g.npz', '--max-rank', 'zero'])\n"
        "except SystemExit as stop:\n"
        "    code = stop.code\n"
        "print(json.dumps([code, sorted({'torch', 'torchvision', 'mlflow', 'ray'} & set(sys.modules))]))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert json.loads(run.stdout.strip().splitlines()[-1]) == [2, []], run.stderr
    assert "--max-rank" in run.stderr and "zero" in run.stderr


def test_features_of_two_models_are_refused_naming_both(model_file, tmp_path, capsys):
    """The landed eval scored query features of one model against gallery features of another
    (R1 1.31, no warning): every features file now records its network and settings."""
    from mgn.checkpoint import save_model, weights_digest
    from mgn.cli import main as cli

    model, config = load_model(model_file)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # another network of the same shape
    other = save_model(model, to_dict(config), tmp_path / "other.pt")
    root = locate(tiny_config().data)
    query, gallery, flipless = tmp_path / "q.npz", tmp_path / "g.npz", tmp_path / "g-noflip.npz"
    assert cli(["extract", str(model_file), str(root / "query"), "--out", str(query)]) == 0
    assert cli(["extract", str(other), str(root / "bounding_box_test"), "--out", str(gallery)]) == 0
    assert (
        cli(
            ["extract", str(model_file), str(root / "bounding_box_test"), "--out", str(flipless), "--no-flip"]
        )
        == 0
    )
    capsys.readouterr()

    assert cli(["eval", str(query), str(gallery)]) == 2
    error = capsys.readouterr().err
    ours, theirs = weights_digest(load_model(model_file)[0]), weights_digest(load_model(other)[0])
    assert (
        ours != theirs and f"model {ours}" in error and f"model {theirs}" in error and "same model" in error
    )
    assert cli(["eval", str(query), str(flipless)]) == 2  # one network, other settings
    assert "no flip" in capsys.readouterr().err
    image = next((root / "query").iterdir())
    assert cli(["search", str(other), str(image), str(flipless)]) == 2  # the query embedded by another model
    assert f"model {theirs}" in capsys.readouterr().err


def test_files_of_the_wrong_kind_are_named_for_what_they_are(model_file, tmp_path, capsys):
    """The landed messages said "(101)" for a text file given as the model, passed on NumPy's advice
    to unpickle, and called a folder given as the query image missing."""
    from mgn.cli import main as cli

    notes, empty, pickled = tmp_path / "notes.txt", tmp_path / "empty.pt", tmp_path / "pickled.npz"
    notes.write_text("hello\n")
    empty.write_bytes(b"")
    np.savez(pickled, features=np.array([object()], dtype=object), pids=np.array([1]), camids=np.array([1]),
             paths=np.array(["a.jpg"]))  # fmt: skip
    for args, expected in [
        (["export", str(notes), str(tmp_path / "x.onnx")], "it is a text file, starting 'hello'"),
        (["export", str(empty), str(tmp_path / "x.onnx")], "the file is empty"),
        (["eval", str(pickled), str(pickled)], "it holds Python objects, not arrays of numbers"),
        (["search", str(model_file), str(tmp_path), str(pickled)], "is a folder: give one image"),
    ]:
        assert cli(args) == 2
        error = capsys.readouterr().err
        assert expected in error and "allow_pickle" not in error and "(101)" not in error, error


def test_save_model_takes_the_typed_config_or_any_dict_of_it_and_refuses_others(model_file, tmp_path):
    """``save_model(model, dataclasses.asdict(config), path)`` (the obvious call) wrote enum members
    that every command then refused to load; a dict that is no config is refused when saving."""
    import dataclasses

    from mgn.config import ConfigError

    model, config = load_model(model_file)
    for given in (config, dataclasses.asdict(config), to_dict(config)):
        assert load_model(save_model(model, given, tmp_path / "m.pt"))[1] == config
    with pytest.raises(ConfigError, match="model.backbone: 'vgg' is not one of"):
        save_model(model, {"model": {"backbone": "vgg"}}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.integration  # starts a Python subprocess
def test_extract_shows_progress_on_a_terminal_only(model_file, tmp_path):
    """A progress bar where a person watches (stderr is a terminal), none in logs and pipes."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    root = locate(tiny_config().data) / "query"
    piped = mgn("extract", model_file, root, "--out", tmp_path / "a.npz")
    assert "embedding" not in piped.stderr and "batch" not in piped.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # a terminal has a size
    try:
        run = subprocess.run(
            [sys.executable, "-m", "mgn.cli", "extract", str(model_file), str(root), "--out", str(tmp_path / "b.npz"),
             "--batch-size", "4"],
            stdout=subprocess.PIPE, stderr=follower, timeout=300, check=True,
        )  # fmt: skip
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: all was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert b"embedding" in shown and b"batch" in shown and b"wrote" in run.stdout
