"""The one exception family aeflow raises for anything a user can fix.

Every message is a single line that says what was wrong and what to do. The CLI prints it
without a traceback and exits with ``exit_code``.
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
