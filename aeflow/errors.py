"""The one exception family for anything a user can fix: one line saying what was wrong and what to do.
The CLI prints ``aeflow: error: <message>`` and exits with ``exit_code``; the API raises the same: UsageError
(2), InputError, DataError, ArtifactError, DeviceError, OutputError, ParityError, TrainingError (1), Interrupted."""


class AeflowError(Exception):
    """Base class: a problem the user can fix (exit code 1). ``message``: its one line."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return self.args[0]


class UsageError(AeflowError):
    """An option or argument that cannot work (exit code 2), a missing extra for the option asked for."""

    exit_code = 2


class InputError(AeflowError):
    """Images it cannot read or score: missing, empty, corrupted, wrong shape or dtype, NaN/Inf, out of range."""


class DataError(AeflowError):
    """A training or evaluation data set that cannot be found or downloaded."""


class ArtifactError(AeflowError):
    """Missing, corrupted or mismatched artifacts or checkpoints (a sha256 mismatch: --no-verify loads anyway)."""


class DeviceError(AeflowError):
    """An execution provider asked for that cannot run here (--device cuda: names what is missing)."""


class OutputError(AeflowError):
    """An output that cannot be written: a missing or read-only folder, a file without --force, a full disk."""


class ParityError(AeflowError):
    """ONNX outputs that differ from PyTorch by more than the tolerance."""


class TrainingError(AeflowError):
    """Training that diverged (NaN/Inf loss or parameters); nothing written."""


class ScaleWarning(UserWarning):
    """Values whose range suggests the wrong scale (uint8 holding only 0/1, floats divided by 255 twice; the flow's
    values whose std a few far values set), or too few validation images to set a threshold on: a warning, as they
    may be what the user meant."""


class Interrupted(AeflowError):
    """Ctrl-C (exit code 130) or a signal (128 + the signal); the message says whether output was written."""

    exit_code = 130


def one_line(e: BaseException, limit: int = 160) -> str:
    """``e``'s message on one line, cut to ``limit`` characters (its type's name when it has none)."""
    return " ".join(str(e).split())[:limit] or type(e).__name__
