"""What a scoring run reports, one mechanism for ``aeflow score`` and ``aeflow.distributed``: each
input's counts (``InputResult``, its report row) and the context its outputs record."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from aeflow.files import printable_name

COUNTS = ("images", "flagged", "seconds", "normal", "false_alarms", "anomalous", "misses")


@dataclass
class InputResult:
    """One input's outcome: images, flagged, seconds, scores float32 [n] (when kept), labels bool [n]
    or None and, where labelled, normal images, false alarms, anomalies, misses."""

    name: str
    images: int
    flagged: int = 0
    seconds: float = 0.0
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None
    normal: int = 0
    false_alarms: int = 0
    anomalous: int = 0
    misses: int = 0

    def __post_init__(self):  # the report is UTF-8: stray bytes of a file name are escaped
        self.name = printable_name(self.name)

    def add(self, start: int, scores: np.ndarray, threshold: float, seconds: float) -> None:
        """Account for the float32 scores of images [start, start + len(scores)), flagged above ``threshold``."""
        flags = scores > threshold
        self.flagged += int(flags.sum())
        self.seconds += seconds
        if self.scores is not None:
            self.scores[start:start + len(scores)] = scores
        if self.labels is not None:
            lab = self.labels[start:start + len(scores)]
            self.normal += int((~lab).sum())
            self.false_alarms += int((flags & ~lab).sum())
            self.anomalous += int(lab.sum())
            self.misses += int((~flags & lab).sum())

    def row(self) -> dict:
        """This input's row of the report (``aeflow score``'s table and its --json "inputs")."""
        n, normal, anomalous = self.images, self.normal, self.anomalous
        return {"name": self.name, "images": n, "flagged": self.flagged,
                "share": self.flagged / n if n else float("nan"), "seconds": self.seconds,
                "images_per_s": n / self.seconds if self.seconds > 0 else None,
                "type_i": {"rate": self.false_alarms / normal, "n": normal, "flagged": self.false_alarms}
                if normal else None,
                "type_ii": {"rate": self.misses / anomalous, "n": anomalous, "missed": self.misses}
                if anomalous else None}


def total(results: list[InputResult], seconds: float | None = None) -> InputResult:
    """The sum of ``results`` named "total"; ``seconds``: the wall time (default: theirs added)."""
    sums = {c: sum(getattr(r, c) for r in results) for c in COUNTS}
    return InputResult("total", **(sums if seconds is None else sums | {"seconds": seconds}))


def output_context(scorer) -> dict:
    """What the outputs' metadata records of ``scorer`` (an ``AnomalyScorer``), the artifacts folder absolute."""
    return {"artifacts": os.path.abspath(scorer.directory), "graph": scorer.graph.name,
            "precision": scorer.precision, "provider": scorer.provider, "batch_size": scorer.batch_size,
            "threshold": scorer.threshold}
