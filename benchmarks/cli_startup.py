"""How long the ``mgn`` command takes to answer before it does any work.

Times, in fresh interpreters (best of ``--rounds``): ``mgn --help``, ``mgn eval`` with a mistyped
option (an argument error), and as the reference measured in the same minutes, ``import torch``
alone (what every command paid before its arguments were parsed). Target: help and argument errors
well under a second, whatever torch costs on the machine.

Run: ``python benchmarks/cli_startup.py`` (about 30 seconds).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

CASES = {
    "mgn --help": "from orchestration.runtime.model_uris import main; main(['--help'])",
    "mgn eval, an argument error": "from orchestration.runtime.model_uris import main; main(['eval', 'q', 'g', '--k1', 'x'])",
    "reference: import torch": "import torch",
    "reference: import torch, torchvision": "import torch, torchvision",
}


def seconds(code: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    best = {name: min(seconds(code) for _ in range(rounds)) for name, code in CASES.items()}
    for name, value in best.items():
        print(f"{name:34s} {value:6.2f} s")
    torch_cost = best["reference: import torch, torchvision"]
    print(
        f"help answers in {best['mgn --help'] / torch_cost:.2f}x the time of importing torch and torchvision"
    )


if __name__ == "__main__":
    main()
