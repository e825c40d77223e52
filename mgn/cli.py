"""mgn: extract features, search a gallery, evaluate, export to ONNX.

    mgn extract model.pt data/Market-1501-v15.09.15/query --out query.npz
    mgn extract model.pt data/Market-1501-v15.09.15/bounding_box_test --out gallery.npz
    mgn eval query.npz gallery.npz --rerank
    mgn search model.pt person.jpg gallery.npz --top-k 10 --png ranks.png
    mgn export model.pt mgn.onnx --check

A model file is what mgn.checkpoint.save_model writes (and what a grid logs with
--log-checkpoint); training checkpoints work too. Features files are .npz: features (N, D),
pids, camids, paths.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from mgn.config import Metric
from mgn.errors import UsageError

MODEL_URIS = ("models:/", "runs:/")
MODEL_HELP = (
    "model file (save_model) or training checkpoint, or a model a grid logged to MLflow "
    "(--log-checkpoint): models:/NAME/VERSION or runs:/RUN_ID"
)


# Resolves an MLflow model URI to a local weights file. The library reads files only; the ``mgn``
# command installed with the project hands ``main`` orchestration's resolver (the one door to MLflow).
ModelResolver = Callable[[str], Path]


class ModelSource:
    """A model file, or an MLflow URI resolved to one when the command needs it."""

    def __init__(self, given: str) -> None:
        self.given = given

    def path(self, resolve: ModelResolver | None) -> Path:
        if not self.given.startswith(MODEL_URIS):
            return Path(self.given)
        if resolve is None:
            raise UsageError(
                f"{self.given}: an MLflow model URI, which this entry point cannot read (mgn.cli reads files). Use "
                "the `mgn` command installed with the project, which resolves models:/ and runs:/ URIs, or pass "
                "the model file"
            )
        return resolve(self.given)


def features_file(text: str) -> Path:
    """An argparse type: a path ending in .npz. NumPy adds the suffix to any other name, so "--out
    /dev/full" wrote /dev/full.npz while the command said it wrote /dev/full."""
    path = Path(text)
    if path.suffix != ".npz":
        raise argparse.ArgumentTypeError(f"{text}: a features file is NAME.npz (NumPy would write {text}.npz)")
    return path


def positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="mgn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    main.add_argument("--version", action="version", version=f"mgn {_version()}")
    commands = main.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, example: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=f"{help}\n\nexample:\n  {example}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip

    p = command("extract", "Embed every image of a folder into a features file (.npz).",
                "mgn extract model.pt Market-1501-v15.09.15/query --out query.npz")  # fmt: skip
    p.add_argument("checkpoint", type=ModelSource, help=MODEL_HELP)
    p.add_argument(
        "folder", type=Path, help="folder of images; <pid>_c<camera>... names give identities and cameras"
    )
    p.add_argument(
        "--out", type=features_file, default=Path("features.npz"),
        help="features file to write, NAME.npz (default features.npz)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=positive, default=64, help="images per forward pass (default 64)")
    p.add_argument("--no-flip", action="store_true", help="do not average with the mirrored image (§4.1)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.set_defaults(run=lambda commands, args: commands.extract(args))

    p = command("eval", "CMC, mAP and mINP of query features against gallery features (Market-1501 protocol).",
                "mgn eval query.npz gallery.npz --rerank")  # fmt: skip
    p.add_argument("query", type=Path, help="features file of the queries")
    p.add_argument("gallery", type=Path, help="features file of the gallery")
    p.add_argument(
        "--metric",
        choices=[m.value for m in Metric],
        default="euclidean",
        help="distance (default euclidean)",
    )
    p.add_argument("--normalize", action="store_true", help="L2-normalise features first")
    p.add_argument(
        "--ap",
        choices=["step", "trapezoid"],
        default="step",
        help="step (torchreid) or trapezoid (MATLAB) AP",
    )
    p.add_argument("--max-rank", type=positive, default=None,
                   help="longest CMC rank reported (default 50; at most the gallery's size)")  # fmt: skip
    p.add_argument(
        "--rerank", action="store_true", help="also with k-reciprocal re-ranking (Zhong et al., 2017)"
    )
    p.add_argument("--k1", type=positive, default=20, help="re-ranking: k-reciprocal neighbours (default 20)")
    p.add_argument(
        "--k2", type=positive, default=6, help="re-ranking: query expansion neighbours (default 6)"
    )
    p.add_argument("--lambda-value", type=float, default=0.3,
                   help="re-ranking: weight of the original distance (default 0.3)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object (percentages)")
    p.set_defaults(run=lambda commands, args: commands.evaluate(args))

    p = command("search", "The gallery images nearest to a query image, with distances (and a rank-list PNG).",
                "mgn search model.pt person.jpg gallery.npz --top-k 10 --png ranks.png")  # fmt: skip
    p.add_argument("checkpoint", type=ModelSource, help=MODEL_HELP)
    p.add_argument("image", type=Path, help="the query image")
    p.add_argument("gallery", type=Path, help="features file of the gallery (mgn extract)")
    p.add_argument("--top-k", type=positive, default=10, help="how many gallery images to list (default 10)")
    p.add_argument("--png", type=Path, help="also draw the rank list (green: same identity, red: another)")
    p.add_argument("--no-flip", action="store_true", help="do not average with the mirrored image (§4.1)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.set_defaults(run=lambda commands, args: commands.search(args))

    p = command("export", "Export the embedding network (normalisation inside, dynamic batch) to ONNX.",
                "mgn export model.pt mgn.onnx --check")  # fmt: skip
    p.add_argument("checkpoint", type=ModelSource, help=MODEL_HELP)
    p.add_argument("out", type=Path, help="the .onnx file to write")
    p.add_argument("--no-flip", action="store_true", help="one pass instead of averaging with the mirror")
    p.add_argument("--no-normalize", action="store_true", help="return the raw embedding, not L2-normalised")
    p.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch on random images")
    p.set_defaults(run=lambda commands, args: commands.export(args))
    return main


def _version() -> str:
    try:
        return metadata.version("mgn-reid")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None, resolve_uri: ModelResolver | None = None) -> int:
    """The ``mgn`` commands; ``resolve_uri`` reads ``models:/``/``runs:/`` model URIs (None: files only)."""
    args = parser().parse_args(argv)
    args.resolve_uri = resolve_uri
    from mgn import commands  # torch and the data stack: only once the arguments parse
    from mgn.data.images import CorruptImageError

    try:
        status: int = args.run(commands, args)
        return status
    except CorruptImageError as error:  # the training knob that skips such files is not ours here
        what = f"cannot read image {error.path}: {error.reason}" if error.path else str(error).split(". Replace")[0]
        print(f"mgn {args.command}: error: {what}. Replace or remove the file", file=sys.stderr)
        return 2
    except commands.ERRORS as error:
        print(f"mgn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
