"""The one exception family aeflow raises for anything a user can fix.

Every message is a single line that says what was wrong and what to do. The CLI prints it as
``aeflow: error: <message>`` without a traceback and exits with ``exit_code``; the Python API
raises the same exception with the same message. Catch ``AeflowError`` to catch them all::

    AeflowError          exit 1  base class
    +-- UsageError       exit 2  an option or argument that cannot work: -n 0, a seed out of
    |                            range, unknown device/precision/method, --threshold NaN, a
    |                            missing extra (matplotlib, torch) for the option asked for
    +-- InputError       exit 1  images that cannot be read or scored: missing/empty/corrupted
    |                            files, wrong shape or dtype, NaN/Inf, values outside [0, 1],
    |                            z values outside the flow's range
    +-- DataError        exit 1  a training/evaluation data set that cannot be found or downloaded
    +-- ArtifactError    exit 1  missing, corrupted or mismatched artifacts: ONNX graphs that do not
    |                            load or have other inputs/outputs, malformed threshold.json or
    |                            flow.json, unknown schema_version, bad threshold, sha256
    |                            mismatch (--no-verify loads anyway), unsafe or foreign checkpoints
    +-- DeviceError      exit 1  --device cuda where the CUDA provider cannot run (names what is
    |                            missing: onnxruntime-gpu, driver, CUDA or cuDNN libraries)
    +-- OutputError      exit 1  an output that cannot be written: missing or read-only folder,
    |                            existing file without --force, not enough disk space
    +-- ParityError      exit 1  exported ONNX outputs that differ from PyTorch beyond tolerance
    +-- TrainingError    exit 1  training diverged (NaN/Inf loss or parameters); nothing written
    +-- Interrupted      exit 130 Ctrl-C (128 + the signal for SIGTERM/SIGHUP); the message says
                                 what was finished and whether any output was written (outputs are
                                 complete or absent, never partial)

Warnings (``warnings.warn``; the CLI prints ``aeflow: warning: ...`` on stderr): ``ScaleWarning``.
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
    """An option or argument that cannot work (exit code 2)."""

    exit_code = 2


class InputError(AeflowError):
    """Data handed to aeflow (images, files, folders) that it cannot read or score."""


class DataError(AeflowError):
    """A training or evaluation data set that cannot be found or downloaded."""


class ArtifactError(AeflowError):
    """Missing, corrupted or mismatched artifacts (ONNX graphs, JSON metadata, checkpoints)."""


class DeviceError(AeflowError):
    """An execution provider that was asked for but cannot run here."""


class OutputError(AeflowError):
    """An output path that cannot be written (missing folder, read-only, exists without --force)."""


class ParityError(AeflowError):
    """ONNX outputs that differ from PyTorch by more than the tolerance."""


class TrainingError(AeflowError):
    """Training that cannot give a usable model: the loss or the parameters stopped being finite."""


class ScaleWarning(UserWarning):
    """Images whose value range suggests the wrong scale (uint8 holding only 0/1, floats divided by
    255 twice): they would score as blank images. A warning, not an error: they may be real."""


class Interrupted(AeflowError):
    """Ctrl-C during a long command (exit code 130); the message says whether output was written."""

    exit_code = 130
