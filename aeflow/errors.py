"""The one exception family aeflow raises for anything a user can fix: a single line saying what was
wrong and what to do. The CLI prints ``aeflow: error: <message>`` without a traceback and exits with
``exit_code``; the API raises the same. Catch ``AeflowError`` (exit 1) for all of them: UsageError
(exit 2), InputError, DataError, ArtifactError, DeviceError, OutputError, ParityError, TrainingError
(exit 1) and Interrupted (130; 128 + the signal for SIGTERM/SIGHUP). Warnings: ``ScaleWarning``. ``one_line``
cuts a caught exception down to one line for a message.
"""


class AeflowError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return self.args[0]


class UsageError(AeflowError):
    """An option or argument that cannot work (exit code 2): -n 0, a seed out of range, an unknown
    device, --threshold NaN, a missing extra for the option asked for."""

    exit_code = 2


class InputError(AeflowError):
    """Images it cannot read or score: missing, empty or corrupted files, a wrong shape or dtype,
    NaN/Inf, values outside [0, 1], z values outside the flow's range."""


class DataError(AeflowError):
    """A training or evaluation data set that cannot be found or downloaded."""


class ArtifactError(AeflowError):
    """Missing, corrupted or mismatched artifacts: graphs, threshold.json/flow.json, a sha256 mismatch
    (--no-verify loads anyway), unsafe or foreign checkpoints."""


class DeviceError(AeflowError):
    """An execution provider asked for that cannot run here (--device cuda: names what is missing)."""


class OutputError(AeflowError):
    """An output that cannot be written: a missing or read-only folder, an existing file without
    --force, not enough disk space."""


class ParityError(AeflowError):
    """ONNX outputs that differ from PyTorch by more than the tolerance."""


class TrainingError(AeflowError):
    """Training that diverged (NaN/Inf loss or parameters); nothing written."""


class ScaleWarning(UserWarning):
    """Images whose value range suggests the wrong scale (uint8 holding only 0/1, floats divided by
    255 twice): they would score as blank images. A warning, not an error: they may be real."""


class Interrupted(AeflowError):
    """Ctrl-C (exit code 130) or a signal; the message says what was finished and whether output was
    written (outputs are complete or absent, never partial)."""

    exit_code = 130


def one_line(e: BaseException, limit: int = 160) -> str:
    """``e``'s message on one line, cut to ``limit`` characters (its type's name when it has none)."""
    return " ".join(str(e).split())[:limit] or type(e).__name__
