"""Where fold jobs run: a pool of local processes, a Dask cluster, a Ray cluster or Slurm (submitit).

An executor runs independent tasks ``fn(*args)`` and reports, per task, its result or the error it
raised; it knows nothing about training. :func:`~ensemble_kit.project.train_project` makes every
``(model, fold)`` one task that writes its fold into the shared store, so an executor only has to
run functions somewhere that sees the store's folder.

A task whose *worker* dies (killed, out of memory, a lost node) is run again, up to ``retries``
times, and resumes from the fold's last checkpoint; a task that *raises* is not retried (the same
input would raise again) and is reported. Engines are optional extras, imported only when chosen
(``pip install "ensemble_kit[dask]"``, ``[ray]``, ``[slurm]``).

Executors are named by a spec string, ``NAME`` or ``NAME:ARG`` (the CLI's ``--executor``)::

    local:4               4 worker processes on this machine (each its own GPU, when there are GPUs)
    dask                  a local Dask cluster (one single-threaded worker process per core)
    dask:2                a local Dask cluster of 2 worker processes
    dask:tcp://host:8786  a running Dask scheduler
    ray                   a local Ray instance;  ray:auto / ray:ADDRESS  a running Ray cluster
    slurm:PARTITION       Slurm jobs through submitit (slurm:local runs them as local processes)
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble_kit._optional import import_optional
from ensemble_kit._registry import Registry
from ensemble_kit.errors import ValidationError

__all__ = ["EXECUTORS", "Executor", "TaskOutcome", "parse_executor"]

logger = logging.getLogger(__name__)

EXECUTORS: Registry[type[Executor]] = Registry("executor")
DEFAULT_RETRIES = 2


@dataclass(frozen=True)
class TaskOutcome:
    """What became of one task: its result, or the error it raised (``error`` is ``None`` on success)."""

    args: tuple[Any, ...]
    result: Any = None
    error: BaseException | None = None


class Executor(ABC):
    """Runs independent tasks ``fn(*args)`` and returns one :class:`TaskOutcome` per task, in order.

    Subclasses implement :meth:`run`; ``describe()`` says where tasks run (for logs).
    """

    retries: int = DEFAULT_RETRIES

    @classmethod
    @abstractmethod
    def from_spec(cls, arg: str | None) -> Executor:
        """Build from the part of a spec after ``NAME:`` (``None`` when there is none)."""

    @abstractmethod
    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]],
            on_done: Callable[[TaskOutcome], None] | None = None) -> list[TaskOutcome]:
        """Run every task; ``on_done`` is called as each one ends (in the calling process)."""

    def describe(self) -> str:
        return type(self).__name__

    def check(self) -> None:
        """Raise a named error now if this executor cannot run here (a missing engine), before
        anything is written. Default: nothing to check."""

    @property
    def workers(self) -> int | None:
        """How many tasks run at once, when known (the local pool's size)."""
        return None


def parse_executor(spec: str | Executor | None) -> Executor | None:
    """The executor a spec string names (``None`` stays ``None``: the calling process trains).

    >>> parse_executor("local:2").describe()
    'local process pool of 2 workers'
    >>> parse_executor("locl:2")
    Traceback (most recent call last):
    ...
    ensemble_kit.errors.ValidationError: Executor 'locl:2': Unknown executor 'locl'; did you mean 'local'? ...
    """
    if spec is None or isinstance(spec, Executor):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValidationError(f"An executor spec is NAME or NAME:ARG (e.g. 'local:2', 'dask', 'ray'); got {spec!r}.")
    name, _, arg = spec.strip().partition(":")
    try:
        cls = EXECUTORS.get(name)
        return cls.from_spec(arg or None)
    except ValidationError as exc:
        raise ValidationError(f"Executor {spec!r}: {exc}") from None


def _count(arg: str, *, what: str) -> int:
    try:
        n = int(arg)
    except ValueError:
        raise ValidationError(f"{what} takes a number of workers (e.g. {what}:2); got {arg!r}.") from None
    if n < 1:
        raise ValidationError(f"{what} needs at least 1 worker; got {n}.")
    return n


# ---------------------------------------------------------------------- local processes
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
#: Seconds between two looks of a worker's watchdog at its parent (the fallback where the parent's
#: death is not signalled: not Linux, or prctl unavailable).
PARENT_WATCH_INTERVAL = 0.5


def _exit_with_parent(owner_pid: int | None) -> None:
    """Make this pool worker end as soon as the process that started it ends, however it ends.

    A worker blocks on the pool's call queue, whose write end every worker holds too, so it never
    sees the queue close: after ``kill -9`` of the parent it would wait (or train) for ever. Two
    guards, both set up before the worker takes a task:

    - Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, the kernel kills the worker when its parent
      dies, even while the worker holds the GIL in a long C call. (The signal follows the parent
      *thread* that started the worker: the pool starts workers from the thread calling ``run``,
      which waits in ``run`` for as long as the pool lives.)
    - everywhere: a daemon thread waiting on the parent's sentinel (``multiprocessing``'s handle
      on the parent: a pipe that reaches EOF, or a process handle that is signalled, when the
      parent dies) and watching ``os.getppid()`` change, which then ends the process.

    ``owner_pid`` is the pid of the process that created the pool when workers are its direct
    children (``spawn``; ``None`` for ``forkserver``, whose workers are the fork server's children
    and are orphaned when the fork server, which exits with its owner, ends). A parent that died
    before the guards were set (so no signal will come) is caught by comparing it with
    ``os.getppid()``.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no usable libc: the watchdog thread still guards
            pass
    if owner_pid is not None and os.getppid() != owner_pid:
        os._exit(1)  # the owner is already gone: this worker was reparented before it could watch
    threading.Thread(target=_watch_parent, args=(parent,), name="ensemble_kit-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    """End this process when its parent ends (the parent's sentinel fires or ``getppid()`` changes)."""
    import multiprocessing
    from multiprocessing.connection import wait as wait_for

    handle = multiprocessing.parent_process()
    sentinel = getattr(handle, "sentinel", None)
    while True:
        if sentinel is not None:
            if wait_for([sentinel], timeout=PARENT_WATCH_INTERVAL):
                break
        else:
            time.sleep(PARENT_WATCH_INTERVAL)
        if os.getppid() != parent:
            break
    # os._exit, not sys.exit: this is not the main thread, which may be deep in a fold and must
    # not get to write anything more for a run whose parent is gone
    os._exit(1)


def _init_local_worker(slots: Any, devices: list[str], threads: Any, owner_pid: int | None = None) -> None:
    """A pool worker's start: tied to its parent's life, its own GPU (when there are GPUs) and its
    share of the CPU threads."""
    _exit_with_parent(owner_pid)
    slot = slots.get()
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
    _use_worker_threads(threads)


def _use_worker_threads(choice: Any) -> None:
    """This worker's share of the CPU (a :class:`~ensemble_kit.train._threads.ThreadChoice`): what
    every fold it trains uses unless its config sets ``cpu_threads``, and torch's setting meanwhile."""
    from ensemble_kit.train._threads import set_worker_threads

    set_worker_threads(choice)
    # libraries that read it when they load (OpenBLAS, OpenMP runtimes) start with the share too
    os.environ.setdefault("OMP_NUM_THREADS", str(choice.torch))
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(choice.torch)


def _visible_gpus() -> list[str]:
    """The GPUs this machine lets us use, as CUDA_VISIBLE_DEVICES entries."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d for d in given.split(",") if d.strip()]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """N worker processes on this machine (local:N; default one per GPU, else one per core), each with its own GPU.

    Workers end with the process that started them, however it ends (``kill -9`` included): on
    Linux the kernel kills them (``PR_SET_PDEATHSIG``), elsewhere a watchdog thread in each
    worker sees the parent go within :data:`PARENT_WATCH_INTERVAL` seconds.
    """

    def __init__(self, n_workers: int | None = None, *, retries: int = DEFAULT_RETRIES) -> None:
        self.n_workers = n_workers
        self.retries = retries

    @classmethod
    def from_spec(cls, arg: str | None) -> LocalExecutor:
        return cls(None if arg is None else _count(arg, what="local"))

    @property
    def workers(self) -> int:
        if self.n_workers is not None:
            return self.n_workers
        return len(_visible_gpus()) or os.cpu_count() or 1

    def describe(self) -> str:
        return f"local process pool of {self.workers} workers"

    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]],
            on_done: Callable[[TaskOutcome], None] | None = None) -> list[TaskOutcome]:
        import multiprocessing

        from ensemble_kit.train._threads import local_worker_threads

        n = min(self.workers, max(1, len(tasks)))
        devices = _visible_gpus()
        threads = local_worker_threads(n)  # max(1, free CPUs // n) each: the workers never oversubscribe the CPU
        outcomes: dict[int, TaskOutcome] = {}
        pending = list(range(len(tasks)))
        deaths = 0
        context = multiprocessing.get_context("spawn")  # CUDA and threads survive spawn, not fork
        while pending:
            slots = context.Queue()
            for slot in range(n):
                slots.put(slot)
            # spawned workers are this process's own children: each checks that its parent is us
            with ProcessPoolExecutor(n, mp_context=context, initializer=_init_local_worker,
                                     initargs=(slots, devices, threads, os.getpid())) as pool:
                futures = {pool.submit(fn, *tasks[i]): i for i in pending}
                broken = False
                remaining = set(futures)
                while remaining:
                    done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                    for future in done:
                        i = futures[future]
                        try:
                            outcome = TaskOutcome(tasks[i], result=future.result())
                        except BrokenProcessPool:
                            broken = True
                            continue
                        except Exception as exc:  # the task raised: reported, not retried
                            outcome = TaskOutcome(tasks[i], error=exc)
                        outcomes[i] = outcome
                        if on_done is not None:
                            on_done(outcome)
            pending = [i for i in pending if i not in outcomes]
            if broken and pending:
                deaths += 1
                if deaths > self.retries:
                    for i in pending:
                        outcomes[i] = TaskOutcome(tasks[i], error=RuntimeError(
                            f"its worker process died {deaths} times (killed, or out of memory)"))
                        if on_done is not None:
                            on_done(outcomes[i])
                    break
                logger.warning("a worker process died; restarting the pool for %d unfinished task(s) "
                               "(attempt %d of %d; each resumes from its last checkpoint)",
                               len(pending), deaths, self.retries)
        return [outcomes[i] for i in range(len(tasks))]


# ---------------------------------------------------------------------- Dask
@EXECUTORS.register("dask")
class DaskExecutor(Executor):
    """A Dask cluster: dask (local, a worker per core), dask:N (local, N workers) or dask:tcp://SCHEDULER."""

    def __init__(self, address: str | None = None, n_workers: int | None = None, *,
                 retries: int = DEFAULT_RETRIES) -> None:
        self.address = address
        self.n_workers = n_workers
        self.retries = retries

    @classmethod
    def from_spec(cls, arg: str | None) -> DaskExecutor:
        if arg is None or arg.isdigit():
            return cls(n_workers=None if arg is None else _count(arg, what="dask"))
        return cls(address=arg)

    def describe(self) -> str:
        return f"Dask scheduler {self.address}" if self.address else \
            f"local Dask cluster of {self.n_workers or os.cpu_count()} workers"

    def check(self) -> None:
        import_optional("distributed", feature="The dask executor")

    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]],
            on_done: Callable[[TaskOutcome], None] | None = None) -> list[TaskOutcome]:
        distributed = import_optional("distributed", feature="The dask executor")
        import dask

        cluster = None
        # a worker that dies while running a task gets it rescheduled; after this many deaths
        # dask gives up on the task (KilledWorker), which is reported like any failure
        with dask.config.set({"distributed.scheduler.allowed-failures": self.retries}):
            if self.address is None:
                cluster = distributed.LocalCluster(n_workers=self.n_workers or os.cpu_count() or 1,
                                                   threads_per_worker=1, processes=True, dashboard_address=None)
            client = distributed.Client(cluster if cluster is not None else self.address)
            try:
                run_id = uuid.uuid4().hex[:8]
                futures = {client.submit(fn, *args, key=f"ensemble_kit-{run_id}-{i}", pure=False, retries=0): i
                           for i, args in enumerate(tasks)}
                outcomes: dict[int, TaskOutcome] = {}
                for future in distributed.as_completed(list(futures)):
                    i = futures[future]
                    error = future.exception()
                    outcome = TaskOutcome(tasks[i], error=error) if error is not None else \
                        TaskOutcome(tasks[i], result=future.result())
                    outcomes[i] = outcome
                    if on_done is not None:
                        on_done(outcome)
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
        return [outcomes[i] for i in range(len(tasks))]


# ---------------------------------------------------------------------- Ray
@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Ray: ray (a local instance using every core), ray:N (local, N CPUs) or ray:auto / ray:ADDRESS (a cluster)."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None, *,
                 retries: int = DEFAULT_RETRIES) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.retries = retries

    @classmethod
    def from_spec(cls, arg: str | None) -> RayExecutor:
        if arg is None or arg.isdigit():
            return cls(num_cpus=None if arg is None else _count(arg, what="ray"))
        return cls(address=arg)

    def describe(self) -> str:
        return f"Ray cluster {self.address}" if self.address else "local Ray instance"

    def check(self) -> None:
        import_optional("ray", feature="The ray executor")

    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]],
            on_done: Callable[[TaskOutcome], None] | None = None) -> list[TaskOutcome]:
        ray = import_optional("ray", feature="The ray executor")
        started = not ray.is_initialized()
        if started:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if self.address is None:
                options["num_cpus"] = self.num_cpus or os.cpu_count()
            ray.init(address=self.address, **options)
        try:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
            # max_retries re-runs a task whose worker died; an exception the task raised is final
            remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=self.retries, retry_exceptions=False)(fn)
            refs = {remote.remote(*args): i for i, args in enumerate(tasks)}
            outcomes: dict[int, TaskOutcome] = {}
            waiting = list(refs)
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                i = refs[done[0]]
                try:
                    outcome = TaskOutcome(tasks[i], result=ray.get(done[0]))
                except ray.exceptions.RayTaskError as exc:
                    outcome = TaskOutcome(tasks[i], error=exc.cause if exc.cause is not None else exc)
                except ray.exceptions.RayError as exc:  # the worker died more often than retries allow
                    outcome = TaskOutcome(tasks[i], error=exc)
                outcomes[i] = outcome
                if on_done is not None:
                    on_done(outcome)
        finally:
            if started:
                ray.shutdown()
        return [outcomes[i] for i in range(len(tasks))]


# ---------------------------------------------------------------------- Slurm
@EXECUTORS.register("slurm")
class SlurmExecutor(Executor):
    """Slurm jobs via submitit: slurm:PARTITION (one job per fold; slurm:local runs them as local processes)."""

    def __init__(self, partition: str | None = None, *, folder: str | Path | None = None, timeout_min: int = 24 * 60,
                 gpus_per_node: int = 0, cpus_per_task: int = 4, retries: int = DEFAULT_RETRIES) -> None:
        self.partition = partition
        self.folder = folder
        self.timeout_min = timeout_min
        self.gpus_per_node = gpus_per_node
        self.cpus_per_task = cpus_per_task
        self.retries = retries

    @classmethod
    def from_spec(cls, arg: str | None) -> SlurmExecutor:
        return cls(partition=arg)

    def describe(self) -> str:
        return "submitit local jobs" if self.partition == "local" else f"Slurm partition {self.partition or '(default)'}"

    def check(self) -> None:
        import_optional("submitit", feature="The slurm executor")
        if self.partition != "local" and shutil.which("sbatch") is None:
            raise ValidationError("The slurm executor submits with sbatch, which is not on this machine's PATH: run "
                                  "from a Slurm login node, or try it out with --executor slurm:local.")

    def run(self, fn: Callable[..., Any], tasks: Sequence[tuple[Any, ...]],
            on_done: Callable[[TaskOutcome], None] | None = None) -> list[TaskOutcome]:
        submitit = import_optional("submitit", feature="The slurm executor")
        self.check()
        local = self.partition == "local"
        folder = Path(self.folder) if self.folder is not None else Path.cwd() / "submitit-logs"
        executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster="local" if local else "slurm")
        parameters: dict[str, Any] = {"timeout_min": self.timeout_min, "cpus_per_task": self.cpus_per_task}
        if self.partition not in (None, "local"):
            parameters["slurm_partition"] = self.partition
        if self.gpus_per_node:
            parameters["gpus_per_node"] = self.gpus_per_node
        executor.update_parameters(**parameters)
        outcomes: dict[int, TaskOutcome] = {}
        attempts = {i: 0 for i in range(len(tasks))}
        jobs = {i: executor.submit(fn, *tasks[i]) for i in range(len(tasks))}
        while jobs:
            for i, job in list(jobs.items()):
                if not job.done():
                    continue
                del jobs[i]
                try:
                    outcome = TaskOutcome(tasks[i], result=job.result())
                except submitit.core.utils.UncompletedJobError as exc:  # the job died: run it again
                    if attempts[i] < self.retries:
                        attempts[i] += 1
                        logger.warning("job %s of task %s died (%s); resubmitting (attempt %d of %d)", job.job_id,
                                       tasks[i], str(exc).splitlines()[0], attempts[i], self.retries)
                        jobs[i] = executor.submit(fn, *tasks[i])
                        continue
                    outcome = TaskOutcome(tasks[i], error=exc)
                except Exception as exc:  # submitit re-raises the task's own error
                    outcome = TaskOutcome(tasks[i], error=exc)
                outcomes[i] = outcome
                if on_done is not None:
                    on_done(outcome)
            if jobs:
                time.sleep(1.0)
        return [outcomes[i] for i in range(len(tasks))]
