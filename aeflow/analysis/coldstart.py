"""Cold start, as a CLI user and an embedded caller pay it on every call: wall-clock seconds from
starting a new Python process to its exit, for ``aeflow --help``, ``aeflow score one.png`` (the
artifacts' load-time checks included) and a script that scores one image through
``aeflow.runtime``, next to the floor every such process pays: ``import numpy, onnxruntime``.
The file cache is warm (an untimed run of each first); nothing else is cached between runs."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aeflow.analysis.timing import spread

FLOOR, HELP = "python: import numpy, onnxruntime (the floor)", "aeflow --help"
SCORE_PNG, API = "aeflow score one.png", "python: AnomalyScorer().score(one image)"
GOALS_S = {HELP: 0.1, SCORE_PNG: 0.2}
API_SCRIPT = ("import sys\nimport numpy as np\nfrom aeflow.runtime import AnomalyScorer\n"
              "AnomalyScorer(sys.argv[1]).score(np.load(sys.argv[2]))\n")


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-200:]}")


def measure_cold_start(directory: Path, image: np.ndarray, repeats: int) -> list[dict]:
    """Rows ``{"what", "seconds": spread, "vs_floor", "goal_s"}``, each command run ``repeats``
    times (interleaved) after one untimed round. ``image``: uint8 [H, W], the image scored; ``directory``: the
    artifacts."""
    from PIL import Image

    script = Path(sys.executable).with_name("aeflow")
    aeflow = [str(script)] if script.is_file() else [sys.executable, "-m", "aeflow"]
    with tempfile.TemporaryDirectory(prefix="aeflow-coldstart-") as tmp:
        png, npy = Path(tmp) / "one.png", Path(tmp) / "one.npy"
        Image.fromarray(image).save(png)
        np.save(npy, image[None])
        commands = {FLOOR: [sys.executable, "-c", "import numpy, onnxruntime"], HELP: [*aeflow, "--help"],
                    SCORE_PNG: [*aeflow, "score", str(png), "--artifacts", str(directory)],
                    API: [sys.executable, "-c", API_SCRIPT, str(directory), str(npy)]}
        times: dict[str, list[float]] = {what: [] for what in commands}
        for r in range(repeats + 1):  # interleaved; the first round untimed (file cache, bytecode caches)
            for what, cmd in commands.items():
                t0 = time.perf_counter()
                _run(cmd)
                times[what] += [time.perf_counter() - t0] * (r > 0)
    floor = spread(times[FLOOR])["median"]
    return [{"what": what, "seconds": spread(t), "vs_floor": spread(t)["median"] / floor, "goal_s": GOALS_S.get(what)}
            for what, t in times.items()]
