"""Cold start, as a CLI user and an embedded caller pay it on every call: wall-clock seconds from
starting a new Python process to its exit, for ``aeflow --help``, ``aeflow score one.png`` (one
28x28 PNG, the artifacts' load-time checks included) and a script that imports
``aeflow.runtime`` and scores one image. The operating system's file cache is warm (the files
were read before); nothing else is cached between runs.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HELP, SCORE_PNG, API = "aeflow --help", "aeflow score one.png", "python: AnomalyScorer().score(one image)"
GOALS_S = {HELP: 0.1, SCORE_PNG: 0.2}
API_SCRIPT = ("import sys\nimport numpy as np\nfrom aeflow.runtime import AnomalyScorer\n"
              "AnomalyScorer(sys.argv[1]).score(np.load(sys.argv[2]))\n")


def _aeflow() -> list[str]:
    """The ``aeflow`` console script beside this Python where it is installed, else ``python -m aeflow``."""
    script = Path(sys.executable).with_name("aeflow")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "aeflow"]


def _seconds(what: str, cmd: list[str]) -> float:
    """Wall-clock seconds of one run of ``cmd``; ``RuntimeError`` if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-200:]}")
    return seconds


def measure_cold_start(directory: Path, image: np.ndarray, repeats: int, warm_up: bool = True) -> list[dict]:
    """Rows (``what``, ``seconds`` median, ``seconds_min``, ``seconds_max``, ``repeats``,
    ``goal_s`` or None) for each command above, run ``repeats`` times each, interleaved, after one
    untimed run of each (``warm_up``: it fills the file cache and writes the bytecode caches).
    ``image``: uint8 [28, 28], the image scored; ``directory``: the artifacts."""
    from aeflow.runtime.pngfiles import pillow

    with tempfile.TemporaryDirectory(prefix="aeflow-coldstart-") as tmp:
        png, npy = Path(tmp) / "one.png", Path(tmp) / "one.npy"
        pillow().fromarray(image).save(png)
        np.save(npy, image[None])
        commands = {
            HELP: [*_aeflow(), "--help"],
            SCORE_PNG: [*_aeflow(), "score", str(png), "--artifacts", str(directory)],
            API: [sys.executable, "-c", API_SCRIPT, str(directory), str(npy)],
        }
        times: dict[str, list[float]] = {k: [] for k in commands}
        for r in range(repeats + warm_up):
            for what, cmd in commands.items():
                t = _seconds(what, cmd)
                if r or not warm_up:
                    times[what].append(t)
    rows = []
    for what, t in times.items():
        a = np.array(t)
        rows.append({"what": what, "seconds": float(np.median(a)), "seconds_min": float(a.min()),
                     "seconds_max": float(a.max()), "repeats": int(a.size), "goal_s": GOALS_S.get(what)})
    return rows
