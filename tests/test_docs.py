"""The documentation's commands and code are code: every command in README.md and docs/ that names one
of this project's entry points is parsed by that entry point's real parser (a renamed option, a removed
flag, a wrong choice or a missing argument fails here), every Python example's imports resolve, and
the commands that need no data set, cluster or server are run as written."""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import mgn.cli
import orchestration.datasets.command
import orchestration.recipe_search.command
import orchestration.recipe_search.report
import orchestration.runtime.spool
import orchestration.submit
import orchestration.sweep.command
import orchestration.sweep.report
import orchestration.tables.command
import orchestration.tables.render
from orchestration.tables.registry import TABLES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Command:
    page: str
    argv: list[str]

    def __str__(self) -> str:
        return f"{self.page}: {shlex.join(self.argv)}"


def _blocks(language: str) -> list[tuple[str, str]]:
    return [(page.relative_to(ROOT).as_posix(), m.group(2)) for page in DOCS
            for m in FENCE.finditer(page.read_text()) if m.group(1) == language]  # fmt: skip


def _commands() -> list[Command]:
    """Each shell command of the bash blocks: continuation lines joined, comments and environment
    assignments dropped, ``&&`` chains split."""
    found = []
    for page, text in _blocks("bash"):
        for line in text.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                command, words = words[:cut], words[cut + 1 :]
                while command and re.fullmatch(r"[A-Z_]+=\S*", command[0]):
                    command = command[1:]
                if command:
                    found.append(Command(page, command))
    return found


Parser = Callable[[], argparse.ArgumentParser]

EXPERIMENTS: dict[str, Parser] = {
    **{spec.script: functools.partial(orchestration.tables.command.parser, spec, spec.script)
       for spec in TABLES.values()},
    "experiments/reproduce_paper.py": orchestration.sweep.command.parser,
    "experiments/recipe_search.py": orchestration.recipe_search.command.parser,
}  # fmt: skip
MODULES: dict[str, Parser] = {
    "orchestration.tables": orchestration.tables.render.parser,
    "orchestration.sweep.report": orchestration.sweep.report.parser,
    "orchestration.recipe_search.report": orchestration.recipe_search.report.parser,
    "orchestration.datasets": orchestration.datasets.command.parser,
    "orchestration.runtime.replay": orchestration.runtime.spool.parser,
    "orchestration.submit": orchestration.submit.parser,
}


def _ours(command: Command) -> tuple[Parser, list[str]] | None:
    """The parser and arguments of a command that runs one of this project's entry points."""
    argv = command.argv
    if argv[0] == "mgn":
        return mgn.cli.parser, argv[1:]
    if argv[0] not in ("python", "python3") or len(argv) < 2:
        return None
    if argv[1] == "-m" and argv[2].startswith(("orchestration", "mgn")):
        assert argv[2] in MODULES, f"{command}: no such entry point (known: {sorted(MODULES)})"
        return MODULES[argv[2]], argv[3:]
    if argv[1].startswith("experiments/"):
        assert argv[1] in EXPERIMENTS and (ROOT / argv[1]).is_file(), f"{command}: no such experiment script"
        return EXPERIMENTS[argv[1]], argv[2:]
    return None


def test_the_docs_name_our_entry_points_in_many_commands():
    ours = [c for c in _commands() if _ours(c)]
    # A change that stopped this test from finding the documented commands must not pass silently.
    assert len(ours) >= 30, [str(c) for c in ours]
    documented = {c.argv[1] for c in ours if c.argv[1].startswith("experiments/")}
    assert documented >= {"experiments/ablation_table5.py", "experiments/reproduce_paper.py", "experiments/recipe_search.py"}


@pytest.mark.parametrize("command", [c for c in _commands() if _ours(c)], ids=str)
def test_every_documented_command_parses_with_its_entry_points_parser(command: Command, capsys):
    make_parser, arguments = _ours(command)
    try:
        parsed = make_parser().parse_args(arguments)
    except SystemExit as stop:  # argparse's error (2) or --help (0)
        assert stop.code == 0, f"{command}\n{capsys.readouterr().err}"
        return
    script = getattr(parsed, "script", None)  # orchestration.submit -- experiments/X.py ...
    if script:
        inner = Command(command.page, ["python", *[a for a in script if a != "--"]])
        make_inner, inner_arguments = _ours(inner)
        make_inner().parse_args(inner_arguments)


def test_every_python_example_imports_what_exists():
    blocks = _blocks("python")
    assert blocks, "no Python example found in the docs"
    for page, text in blocks:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                if missing:  # a submodule imported by name
                    missing = [n for n in missing if importlib.util.find_spec(f"{node.module}.{n}") is None]
                assert not missing, f"{page}: {node.module} has no {missing}"


RUN_HERE = [
    # Commands of the docs that need no data set, cluster, server or training: run exactly as written.
    "python experiments/ablation_table5.py --help",
    'python -c "from mgn.recipes import paper; from mgn.config_io import dump_yaml; print(dump_yaml(paper()))" > my_run.yaml',
]


@pytest.mark.integration
@pytest.mark.parametrize("line", RUN_HERE)
def test_commands_that_need_nothing_run_as_written(line: str, tmp_path: Path):
    assert any(line in page.read_text() for page in DOCS), f"not in the docs any more: {line}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", f"cd {shlex.quote(str(ROOT))} && {line.replace('> my_run.yaml', f'> {tmp_path}/my_run.yaml')}"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    if "my_run.yaml" in line:  # the file it writes is a config the scripts take
        from mgn.config import ExperimentConfig
        from mgn.config_io import from_dict, read_mapping
        from mgn.recipes import paper

        assert from_dict(ExperimentConfig, read_mapping(tmp_path / "my_run.yaml")) == paper()
    else:
        assert "--rows" in done.stdout and "--data-root" in done.stdout
