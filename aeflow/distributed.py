"""Scoring image shards on a ``dask.distributed`` cluster: a task per shard (or per ``chunk_size`` images),
scored by each worker's copy of the ``AnomalyScorer`` and flagged on the client, so every decision is bit for
bit the single process's; the Parquet output is staged and published in one step, or not at all."""

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from aeflow.checks import check_int, check_scheduler, check_threads, expand_inputs
from aeflow.errors import AeflowError, InputError, UsageError, one_line
from aeflow.files import atomic_path, staged_folder
from aeflow.optional import require
from aeflow.runtime.inputs import open_source
from aeflow.runtime.outputs import (PART_NAME, InputResult, ScoredInput, check_output_path, output_context,
                                    results_table)
from aeflow.runtime.scorer import AnomalyScorer

DEFAULT_CHUNK = 1 << 18  # images per task where a shard can be split


def _dask():
    return require("distributed", "distributed", "distributed scoring")


@dataclass(frozen=True)
class Task:
    """Images [start, stop) of shard number ``shard`` (``name``, read from ``path``); ``whole``: not split."""

    number: int
    shard: int
    name: str
    path: str
    start: int
    stop: int
    whole: bool
    shard_images: int
    files: tuple[str, ...] | None = None  # a PNG folder's files [start, stop): each row's source

    @property
    def label(self) -> str:
        return self.name if self.whole else f"{self.name} [images {self.start}..{self.stop - 1}]"


def plan(paths: list[Path], column: str | None, chunk_size: int, batch_size: int,
         image_shape: tuple[int, int] = (28, 28)) -> tuple[list[InputResult], list[Task]]:
    """Open every shard (headers only) and cut it into tasks of at most ``chunk_size`` images, whole batches."""
    chunk = -(-chunk_size // batch_size) * batch_size
    shards, tasks = [], []
    for k, p in enumerate(paths):
        name = str(p)
        with open_source(p, name, column, image_shape=image_shape) as src:
            shards.append(InputResult(name, src.n, labels=src.labels))
            files = getattr(src, "files", None)  # rows name their own file, as in the single process
            names = None if files is None else tuple(map(str, files))
            whole = not hasattr(src, "window") or src.n <= chunk
            for start in [0] if whole else range(0, src.n, chunk):
                stop = src.n if whole else min(src.n, start + chunk)
                tasks.append(Task(len(tasks), k, name, os.path.abspath(p), start, stop, whole, src.n,
                                  names[start:stop] if names is not None else None))
    return shards, tasks


_SCORERS: dict[str, object] = {}  # this worker process's scorers, each built once, on first use (its own lock)


def score_task(settings: dict, task: Task, column: str | None) -> tuple[np.ndarray, float]:
    """Run on a worker: the float32 scores of ``task``'s images and the seconds it took."""
    t0 = time.perf_counter()
    scorer = _SCORERS.setdefault(json.dumps(settings, sort_keys=True), AnomalyScorer.from_settings(settings))
    with open_source(task.path, task.name, column, image_shape=scorer.image_shape) as src:
        if src.n != task.shard_images:
            raise InputError(f"{task.name}: holds {src.n} images on this worker, {task.shard_images} where the job "
                             f"was planned; every machine must see the same files")
        with contextlib.nullcontext(src) if task.whole else src.window(task.start, task.stop) as part:
            scores = scorer.score_source(part)
    return scores, time.perf_counter() - t0


class _Writer:
    """Writes each task's rows as they arrive, staged; ``stack`` closes the file, then publishes it."""

    def __init__(self, output: Path, kind: str, context: dict, force: bool, stack: contextlib.ExitStack, scorer,
                 what: str):
        self._pq = require("pyarrow.parquet", "distributed", "Parquet")
        self._scorer, self.kind, self.context = scorer, kind, context
        self._waiting, self._next, self._file = {}, 0, None
        if kind == "folder":
            self._dir = stack.enter_context(staged_folder(output, what=what, replace=force, force=force))
        else:
            self._tmp = stack.enter_context(atomic_path(output, replace=force, what=what))
            stack.callback(lambda: self._file is not None and self._file.close())

    def add(self, task: Task, scores: np.ndarray, threshold: float, labels: np.ndarray | None) -> None:
        table = results_table([ScoredInput(task.name, scores, threshold, labels,
                                           list(task.files) if task.files is not None else None,
                                           self._scorer.p_values_of(scores, missing_ok=True))], self.context,
                              first_index=task.start)
        if self.kind == "folder":
            self._pq.write_table(table, self._dir / PART_NAME.format(task.number))
            return
        self._waiting[task.number] = table
        while self._next in self._waiting:  # one file, in input order
            t = self._waiting.pop(self._next)
            if self._file is None:
                self._file = self._pq.ParquetWriter(self._tmp, t.schema)
            # one dictionary per row group keeps the source names; cast to the first schema
            self._file.write_table(t.cast(self._file.schema) if t.schema != self._file.schema else t)
            self._next += 1


@dataclass
class DistributedRun:
    """What ``score_on_cluster`` did: per-shard results, tasks, wall time, workers."""

    shards: list[InputResult]
    tasks: int
    seconds: float
    workers: int


def score_on_cluster(client, inputs: list[str | os.PathLike], output: str | os.PathLike | None = None,
                     scorer=None, *, column: str | None = None, chunk_size: int = DEFAULT_CHUNK,
                     threads: int = 1, force: bool = False, keep_scores: bool | None = None,
                     on_progress: Callable[[int, int], None] | None = None,
                     context: dict | None = None, what: str = "output") -> DistributedRun:
    """Score ``inputs`` (paths or glob patterns the client and the workers read) on ``client``'s cluster with
    ``scorer`` (default: the bundled artifacts, CPU) into ``output`` (``x.parquet`` or ``DIR/``: complete or absent);
    ``keep_scores``: return every score (default: without ``output``); ``context``: the output's metadata. A failed
    task cancels the rest: one ``AeflowError`` naming it."""
    if check_int(chunk_size, "chunk_size") and check_threads(threads) is None:
        raise UsageError("threads must be a positive integer under a scheduler")
    scorer, paths = scorer if scorer is not None else AnomalyScorer(device="cpu"), expand_inputs(list(inputs))
    kind = None if output is None else check_output_path(output, force, paths, [scorer.directory], dask=True,
                                                         what=what)
    settings = scorer.replace(threads=threads, calibration=None).__getstate__()  # JSON; workers only score
    results, tasks = plan(paths, column, chunk_size, scorer.batch_size, scorer.image_shape)
    if not tasks:
        raise InputError("no inputs to score")
    if (output is None if keep_scores is None else keep_scores):
        for r in results:
            r.scores = np.empty(r.images, np.float32)
    if context is None:
        context = dict(output_context(scorer), scheduler=str(getattr(client.scheduler, "address", "")))
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writer = _Writer(Path(output), kind, context, force, stack, scorer, what) if kind else None
        _run(client, settings, tasks, column, results, scorer.threshold, writer, on_progress)
    return DistributedRun(results, len(tasks), time.perf_counter() - t0,
                          len(client.scheduler_info().get("workers", {})))


def _run(client, settings: dict, tasks: list[Task], column, results: list[InputResult], threshold: float,
         writer, on_progress) -> None:
    """Submit every task and account for (and write) each result as it arrives; on any failure cancel the rest."""
    job = uuid.uuid4().hex  # keys unique to this job: the scheduler may still hold an earlier job's
    futures = {client.submit(score_task, settings, t, column, key=f"aeflow-score-{job}-{t.number}", pure=False): t
               for t in tasks}
    done, total = 0, sum(r.images for r in results)
    try:
        for future in _dask().as_completed(list(futures)):
            task = futures[future]
            try:
                scores, seconds = future.result()
            except AeflowError as e:  # the shard named (unless the message does), the outcome said
                msg = e.message if task.name in e.message else f"{task.label}: {e.message}"
                raise type(e)(f"{msg}; the job stopped, nothing written") from None
            except Exception as e:  # KilledWorker, CommClosedError, an unexpected error on a worker
                raise AeflowError(f"{task.label}: {type(e).__name__} on the cluster ({one_line(e, 200)}); "
                                  f"nothing written") from None
            if len(scores) != task.stop - task.start:
                raise AeflowError(f"{task.label}: a worker returned {len(scores)} scores for {task.stop - task.start} "
                                  f"images; nothing written")
            r = results[task.shard]
            r.add(task.start, scores, threshold, seconds)
            if writer is not None:
                writer.add(task, scores, threshold, None if r.labels is None else r.labels[task.start:task.stop])
            done += task.stop - task.start
            if on_progress is not None:
                on_progress(done, total)
    except BaseException:
        client.cancel(list(futures), force=True)
        raise


@contextlib.contextmanager
def connect(scheduler: str, what: str = "scheduler", start_timeout: float = 120) -> Iterator[object]:
    """A ``distributed.Client`` for ``scheduler``: ``local:N`` starts N one-thread worker processes, all stopped
    on exit; ``tcp://`` or ``tls://HOST:PORT`` connects; ``AeflowError`` where that fails."""
    kind, where = check_address(scheduler, what)
    distributed = _dask()
    if kind == "local":
        with _local(distributed, where, what, start_timeout) as client:
            yield client
        return
    try:
        client = distributed.Client(where, timeout="10s", security=distributed.security.Security())
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise AeflowError(f"cannot reach the Dask scheduler at {where} ({one_line(e)}); "
                          f"start it with 'dask scheduler' or check the address") from None
    with client:
        yield client


@contextlib.contextmanager
def _local(distributed, n: int, what: str, start_timeout: float) -> Iterator[object]:
    """A LocalCluster of ``n`` one-thread workers, started after it (so a signal during the start finds a
    cluster to close) and killed if they outlive the close."""
    before = set(multiprocessing.active_children())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "port 8787 in use" and the like: not the user's concern
        cluster = distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.CRITICAL)
    try:
        cluster.scale(n)
        with distributed.Client(cluster) as client:
            try:
                client.wait_for_workers(n, timeout=start_timeout)
            except TimeoutError:
                raise AeflowError(f"{what} local:{n}: the worker processes did not start within "
                                  f"{start_timeout:g} s") from None
            yield client
    except BaseException:
        _kill(before, quiet_scans=3)  # cut short: no worker still starting may read what the close removes
        raise
    finally:
        with contextlib.suppress(Exception):
            cluster.close(timeout=20)
        type(cluster)._instances.discard(cluster)  # else distributed's exit handler closes it again (a traceback)
        _kill(before)


def _kill(keep: set, quiet_scans: int = 1) -> None:
    """Kill this process's child processes that are not in ``keep`` (the cluster's, not the caller's),
    then, where /proc lists them, any worker still being spawned (not registered yet: fed no more, it
    would print an EOFError traceback), until ``quiet_scans`` scans 50 ms apart find none."""
    for process in set(multiprocessing.active_children()) - keep:
        process.kill()
        process.join(5)
    kept, quiet = {p.pid for p in keep}, 0
    for _ in range(40):
        spawning = _spawning_children() - kept
        for pid in spawning:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        quiet = 0 if spawning else quiet + 1
        if quiet >= quiet_scans:
            return
        time.sleep(0.05)


def _spawning_children() -> set[int]:
    """The pids of this process's children running multiprocessing's spawn_main (Linux /proc; else none)."""
    found = set()
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        with contextlib.suppress(OSError, ValueError, IndexError):
            proc = Path(entry.path)
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) if entry.name.isdigit() else 0
            if parent == os.getpid() and b"spawn_main" in (proc / "cmdline").read_bytes():
                found.add(int(entry.name))
    return found


def check_address(scheduler: str, what: str = "scheduler") -> tuple[str, int | str]:
    """``check_scheduler``, then dask.distributed installed and, for tls://, certificates (else ``UsageError``)."""
    kind, where = check_scheduler(scheduler, what)
    security = _dask().security.Security()
    if str(where).startswith("tls://") and security.get_connection_args("client")["ssl_context"] is None:
        raise UsageError(f"{what} {where}: tls:// needs certificates; set distributed.comm.tls.ca-file, "
                         f".client.cert and .client.key in Dask's configuration (or use tcp://)")
    return kind, where
