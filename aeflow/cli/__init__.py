"""The ``aeflow`` command line: click's documented ``LazyGroup`` (a subcommand is imported only to run or show
its help); every command ends through ``outcome``: an error, a signal, a closed or full stdout -> one line, one code."""

import atexit
import contextlib
import errno
import functools
import gc
import importlib
import os
import signal
import sys
import threading
import warnings

import click

from aeflow import __version__, files
from aeflow.errors import AeflowError, Interrupted, ScaleWarning
from aeflow.files import END_SIGNALS, describe_os_error, remove_temporaries

# command name -> (module, attribute, one-line help shown by 'aeflow --help' without importing it)
COMMANDS = {
    "score": ("aeflow.cli.score", "command", "Score images with the autoencoder and flag anomalies."),
    "calibrate": ("aeflow.cli.calibrate", "command", "Set the threshold from your own normal images."),
    "sample": ("aeflow.cli.sample", "command", "Draw samples from the 1-D flow."),
    "info": ("aeflow.cli.info", "command", "Artifact metadata, hashes and the provider that really runs."),
    "verify": ("aeflow.cli.verify", "command", "Check this machine's outputs against the recorded golden outputs."),
    "evaluate": ("aeflow.cli.evaluate", "command", "Type I/II error and AUROC on whole data sets, HTML report."),
    "bench": ("aeflow.cli.bench", "command", "Benchmark scoring and sampling against PyTorch and peers."),
    "train": ("aeflow.cli.train", "command", "Train the homework's models (needs the train extra)."),
    "export": ("aeflow.cli.export", "command", "Export checkpoints to ONNX and JSON, checked against PyTorch."),
}

# library errors name arguments (device="cuda", verify=False); the command line names its flags
FLAG_WORDING = (('device="cpu" or "auto"', "--device cpu or auto"), ('device="cuda"', "--device cuda"),
                ('device="cpu"', "--device cpu"), ("verify=False", "--no-verify"), ("golden=False", "--no-verify"),
                ("artifacts=DIR", "--artifacts DIR"), ("data_dir=DIR", "--data-dir DIR"), ("force=True", "--force"))


def cli_message(message: str) -> str:
    """An ``AeflowError`` message with the library's argument wording replaced by the CLI's flags."""
    for argument, flag in FLAG_WORDING:
        message = message.replace(argument, flag)
    return message


@contextlib.contextmanager
def _signals_end_the_command():
    """Handlers raising ``KeyboardInterrupt`` for END_SIGNALS, so the command cleans up as for Ctrl-C (later
    signals ignored; one held by ``aeflow.files`` waits); yields ``files.RECEIVED`` (nothing is published after one)."""
    received = files.RECEIVED
    received.clear()
    files.PUBLISHED = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if not received:  # a second signal while cleaning up: let the clean-up finish
            received.append(signum)
            if not files.signal_deferred():
                raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in END_SIGNALS}
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, _ended if _PROCESS else h)
        received.clear()


_PROCESS = False  # True in the aeflow process itself (main), False where a test calls cli.main
_ENDED_WITH: list[int] = []


def _ended(signum, frame):
    """A signal after the command ended (e.g. while Dask's threads shut down): exit now, with its code."""
    os._exit(_ENDED_WITH[0] if _ENDED_WITH else 128 + signum)


class _Stream:
    """A standard stream that a closed (``>&-``), full or broken stream cannot turn into a traceback: stderr
    loses what cannot be written; a stdout closed at the start (``raises``) fails each write with EBADF."""

    encoding, errors = "utf-8", "backslashreplace"

    def __init__(self, stream, raises: bool):
        self._stream, self._raises = stream, raises

    def _do(self, method: str, *args, empty=None):
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a full or closed file; None: closed
            return getattr(self._stream, method)(*args)
        return empty

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # click probes for a binary stream with b""
            raise TypeError("a text stream")
        if text and self._raises:
            raise OSError(errno.EBADF, "it is closed")
        return self._do("write", text, empty=len(text)) if text else 0

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._do("flush")

    def isatty(self) -> bool:
        return bool(self._do("isatty", empty=False))

    def fileno(self) -> int:
        if self._stream is None:
            raise OSError(errno.EBADF, "it is closed")
        return self._stream.fileno()


def _guard_streams() -> None:
    """Keep file descriptors 0-2 taken (a file the command opens must never become fd 1); a closed
    stdout and any stderr become ``_Stream``."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:  # 0 to fd - 1 are open: /dev/null opens as fd (the lowest free one)
            with contextlib.suppress(OSError):
                os.open(os.devnull, os.O_RDWR)
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print escaped
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")
    if sys.stdout is None:  # a real stdout raises OSError itself (kept unwrapped: -o - writes every row)
        sys.stdout = _Stream(None, True)
    if not isinstance(sys.stderr, _Stream):
        sys.stderr = _Stream(sys.stderr, False)


def _stdout_gone() -> None:
    """After stdout failed: send what is left to /dev/null (no traceback from the last flush)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def _show_warning(previous, message, category, *where, **named) -> None:
    """``warnings.showwarning`` printing aeflow's scale warnings as one line, ``aeflow: warning: ...``."""
    if issubclass(category, ScaleWarning):
        click.echo(f"aeflow: warning: {' '.join(str(message).split())}", err=True)
    else:
        previous(message, category, *where, **named)


class _Carried(Exception):
    """An OSError, KeyboardInterrupt or EOFError (``args[0]``) carried past click, which would end it without a
    word (or call it an interruption)."""


def outcome(error: BaseException | None, signum: int | None) -> tuple[str | None, int]:
    """THE mapping from how a command ended to its line on stderr (or None) and exit code: usage 2,
    signals 128 + the signal (Ctrl-C 130), an ``AeflowError`` its ``exit_code``, OSErrors 1."""
    by = f" ({signal.Signals(signum).name})" if signum not in (None, signal.SIGINT) else ""
    code = 128 + signum if signum else 130
    if error is None:
        return None, 0
    if isinstance(error, (click.exceptions.Abort, KeyboardInterrupt)):
        return f"aeflow: interrupted{by}", code
    if isinstance(error, Interrupted):
        return f"aeflow: error: {cli_message(error.message)}{by}", code
    if isinstance(error, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # a bare 'aeflow' (click >= 8.2)
        return error.ctx.get_help(), 2
    if isinstance(error, click.UsageError):
        cmd = error.ctx.command_path if error.ctx else "aeflow"
        return f"{cmd}: error: {' '.join(error.format_message().split())} (see '{cmd} --help')", 2
    if isinstance(error, click.ClickException):
        return f"aeflow: error: {' '.join(error.format_message().split())}", error.exit_code
    if isinstance(error, AeflowError):
        return f"aeflow: error: {cli_message(error.message)}", error.exit_code
    if isinstance(error, EOFError):  # a library reading a truncated file
        return f"aeflow: error: a file ended before its data did ({error or 'EOFError'}); check the inputs", 1
    where = getattr(error, "filename", None)
    if where is None and error.errno in STDOUT_ERRORS:
        _stdout_gone()  # most often stdout closed (>&-, | head) or full
        return f"aeflow: error: cannot write to standard output ({describe_os_error(error)})", 1
    return f"aeflow: error: {f'{where}: ' if where else ''}{describe_os_error(error)}", 1


STDOUT_ERRORS = (errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EBADF)
ENDINGS = (click.ClickException, click.exceptions.Abort, KeyboardInterrupt, AeflowError, OSError)


class LazyGroup(click.Group):
    """click's documented ``LazyGroup``; ``main`` sets up streams, signals and warnings, ends through ``outcome``."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (OSError, KeyboardInterrupt, EOFError) as e:  # click turns an EOFError into "interrupted"
            raise _Carried(e) from None

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        module, attribute, _ = COMMANDS.get(name, (None, None, None))
        command = getattr(importlib.import_module(module), attribute) if module else None
        if _PROCESS and not gc.isenabled():  # main's pause is over: what the imports made lives as long as the process
            gc.freeze()  # so the collector leaves it alone (about 50 collections walked it, 5-8 ms of a cold start)
            gc.enable()
        return command

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in COMMANDS.items()])

    def main(self, args=None, prog_name=None, **extra):
        _guard_streams()
        error = None
        with _signals_end_the_command() as received, warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, warnings.showwarning)
            try:  # click returns --help's and --version's Exit(0) itself
                super().main(args=args, prog_name=prog_name or "aeflow", standalone_mode=False, **extra)
                sys.stdout.flush()
            except _Carried as e:  # an OSError or KeyboardInterrupt, both ENDINGS
                error = e.args[0]
            except ENDINGS as e:
                error = e
            except Exception:
                if not received:
                    raise
            finally:
                remove_temporaries()
            if received and not isinstance(error, (KeyboardInterrupt, click.exceptions.Abort, Interrupted)):
                error = KeyboardInterrupt()  # whatever broke after a signal, or a signal a library swallowed, was it
            if received and files.PUBLISHED:  # the signal came as (or after) an output was published whole
                error = Interrupted(f"interrupted after writing {', '.join(map(str, files.PUBLISHED))} (complete)")
            line, code = outcome(error, received[0] if received else None)
            _ENDED_WITH.append(code)
        if line:
            click.echo(line, err=True)
        sys.exit(code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aeflow")
def cli():
    """aeflow: MNIST anomaly scoring and 1-D flow sampling with ONNX Runtime.

    \b
    Examples:
      aeflow score                      # score the bundled demo set
      aeflow sample -n 10000 -o samples.npy
      aeflow train ae --data-dir ../shared/data --epochs 200 -o runs/a
      aeflow export --data-dir ../shared/data -o runs/a
    """


def main() -> None:
    """Console-script entry point."""
    global _PROCESS
    _PROCESS = True
    atexit.register(_leave)  # registered first, so it runs after every other exit handler
    # multiprocessing's resource tracker (started later, with these flags) unlinks the semaphores a
    # cut-short exit leaves, and would warn about each on stderr after the command's one line
    sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")
    gc.disable()  # until the command's module is imported (LazyGroup.get_command)
    cli.main()


def _leave() -> None:
    """The last exit handler: once the command has ended, leave with its code through ``os._exit``, not the
    interpreter's finalization (where a SIGTERM would end the process, -15)."""
    if _ENDED_WITH:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(_ENDED_WITH[0])
    for s in END_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
