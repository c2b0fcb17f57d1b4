"""How many CPU threads a training process gives torch and the BLAS/OpenMP pools.

torch's default intra-op pool has one thread per CPU it sees, and OpenBLAS/OpenMP the same.
That ignores a container's CPU quota (a ``--cpus=2`` container on a 64-core host gets 64
threads), the other worker processes of the same run (two local workers on two cores each
start two threads: four threads on two cores) and other work on the machine: OpenMP threads
wait for each other at every parallel region, spinning, so one thread that another process
keeps off its CPU stalls them all (measured: 5-10x slower than one thread, on 2 cores beside
other work; ``benchmarks/cpu_threads.py``). The rule, in order:

1. ``cpu_threads`` in the model's config: that many (it also makes CPU logits bit-identical
   wherever a fold runs);
2. a worker of the local executor (``local:N``): ``max(1, free // N)``, ``free`` measured
   (as in 4) by the process that starts the pool;
3. ``OMP_NUM_THREADS`` set in the environment (by you, or by Dask/Ray for their workers): that;
4. otherwise the CPUs this process may use, its affinity mask (``os.sched_getaffinity``)
   capped by the cgroup CPU quota when one is set (``cpu.max``, or v1 ``cpu.cfs_quota_us``),
   less the CPUs other processes keep busy: measured from ``/proc/stat`` over
   :data:`LOAD_WINDOW` seconds (this process's own CPU time subtracted), rounded, at least 1.
   Measured at most every :data:`LOAD_MAX_AGE` seconds; where ``/proc/stat`` is missing (macOS,
   Windows), nothing is subtracted.

torch gets the number with ``torch.set_num_threads`` and the BLAS/OpenMP libraries loaded in
the process with ``threadpoolctl`` (a scikit-learn dependency), for the time a fold trains;
both are restored afterwards. Nothing here imports torch at module level.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ThreadChoice", "available_cpus", "busy_cpus_elsewhere", "choose_threads", "free_cpus",
           "local_worker_threads", "set_worker_threads", "switch_threads", "use_threads"]

#: Seconds over which the CPU use of other processes is measured (rule 4).
LOAD_WINDOW = 0.2
#: A measurement is reused for this many seconds (a project's models start one after another).
LOAD_MAX_AGE = 30.0

#: The choice of a local executor's worker, set when the worker starts (None elsewhere).
_worker: dict[str, ThreadChoice | None] = {"choice": None}
_load: dict[str, float | None] = {"at": None, "busy": None}


@dataclass(frozen=True)
class ThreadChoice:
    """Threads for torch's intra-op pool and for the BLAS/OpenMP pools, and why."""

    torch: int
    blas: int
    reason: str

    def describe(self) -> str:
        """The log line: ``CPU threads: torch N, BLAS N (reason)``."""
        return f"CPU threads: torch {self.torch}, BLAS {self.blas} ({self.reason})"


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup"), self_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """CPUs the cgroup CPU quota allows (rounded up), or ``None`` when no quota is set or readable.

    cgroup v2: ``cpu.max`` (``"150000 100000"``: 1.5 CPUs, ``"max 100000"``: none) of this
    process's cgroup, else of the root the container sees; v1: ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (quota -1: none). Two or three small file reads.
    """
    candidates: list[Path] = []
    try:
        for line in self_cgroup.read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and parts[0] == "0" and parts[2].startswith("/"):
                candidates.append(root / parts[2].lstrip("/") / "cpu.max")
    except OSError:
        pass
    candidates.append(root / "cpu.max")
    for path in candidates:
        try:
            quota, _, period = path.read_text().strip().partition(" ")
        except OSError:
            continue
        try:
            if quota == "max":
                return None
            return max(1, math.ceil(int(quota) / int(period or 100_000)))
        except ValueError:
            return None
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota_us = int((root / folder / "cpu.cfs_quota_us").read_text())
            period_us = int((root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else max(1, math.ceil(quota_us / period_us))
    return None


def _cpu_times(stat: Path = Path("/proc/stat"), cpus: Collection[int] | None = None) -> tuple[float, float] | None:
    """Busy and total jiffies summed over ``cpus`` (every CPU when ``None``), or ``None`` where unreadable."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    found = False
    for line in lines:
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
            continue
        try:
            index = int(fields[0][3:])
            # user nice system idle iowait irq softirq steal (guest time is inside user already)
            values = [float(v) for v in fields[1:9]]
        except ValueError:
            continue
        if cpus is not None and index not in cpus:
            continue
        values += [0.0] * (8 - len(values))
        idle = values[3] + values[4]
        total += sum(values)
        busy += sum(values) - idle
        found = True
    return (busy, total) if found else None


def busy_cpus_elsewhere(window: float | None = None, *, stat: Path = Path("/proc/stat"),
                        clock: Any = time.monotonic, sleep: Any = time.sleep) -> float | None:
    """CPUs of this process's affinity mask kept busy by *other* processes, measured over
    ``window`` seconds (default :data:`LOAD_WINDOW`), or ``None`` where ``/proc/stat`` is unreadable."""
    window = LOAD_WINDOW if window is None else window
    try:
        mask: Collection[int] | None = os.sched_getaffinity(0)
    except AttributeError:
        mask = None
    first = _cpu_times(stat, mask)
    if first is None:
        return None
    own, start = time.process_time(), clock()
    sleep(window)
    second = _cpu_times(stat, mask)
    elapsed, own = clock() - start, time.process_time() - own
    if second is None or elapsed <= 0:
        return None
    busy, total = second[0] - first[0], second[1] - first[1]
    n = len(mask) if mask is not None else (os.cpu_count() or 1)
    if total <= 0:
        return 0.0
    # jiffies -> CPUs: the share of the CPUs' time that was busy, times their number
    return max(0.0, busy / total * n - own / elapsed)


def _busy_elsewhere_cached() -> float | None:
    now = time.monotonic()
    at = _load["at"]
    if at is None or now - at > LOAD_MAX_AGE:
        _load["busy"], _load["at"] = busy_cpus_elsewhere(), time.monotonic()
    return _load["busy"]


def available_cpus() -> tuple[int, str]:
    """CPUs this process may use, and where the number comes from (for the log line)."""
    try:
        cpus, source = len(os.sched_getaffinity(0)), "CPU affinity"
    except AttributeError:  # macOS, Windows
        cpus, source = os.cpu_count() or 1, "os.cpu_count"
    quota = _cgroup_quota()
    if quota is not None and quota < cpus:
        return quota, f"cgroup CPU quota; {cpus} by {source}"
    return max(cpus, 1), source


def _omp_num_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= 1 else None


def choose_threads(cpu_threads: int | None = None) -> ThreadChoice:
    """The threads a fold trains with here (the rule in this module's docstring).

    >>> choose_threads(3).describe()
    'CPU threads: torch 3, BLAS 3 (cpu_threads: 3 in the config)'
    """
    if cpu_threads is not None:
        return ThreadChoice(int(cpu_threads), int(cpu_threads), f"cpu_threads: {cpu_threads} in the config")
    worker = _worker["choice"]
    if worker is not None:
        return worker
    omp = _omp_num_threads()
    if omp is not None:
        return ThreadChoice(omp, omp, f"OMP_NUM_THREADS={omp} in the environment")
    free, why = free_cpus()
    return ThreadChoice(free, free, why)


def free_cpus() -> tuple[int, str]:
    """CPUs this process may use less those other processes keep busy (rule 4), and why."""
    cpus, source = available_cpus()
    busy = _busy_elsewhere_cached()
    if busy is None:
        return cpus, f"{cpus} CPUs available to this process ({source})"
    free = max(1, min(cpus, int(cpus - busy + 0.5)))
    return free, f"{cpus} CPUs available to this process ({source}), {busy:.1f} busy with other work"


def local_worker_threads(workers: int) -> ThreadChoice:
    """Each of ``workers`` local worker processes on this machine: ``max(1, free // workers)``."""
    free, why = free_cpus()
    n = max(1, free // max(workers, 1))
    return ThreadChoice(n, n, f"{why}; {free} shared by {workers} local worker processes")


def set_worker_threads(choice: ThreadChoice | None) -> None:
    """Make ``choice`` what :func:`choose_threads` gives in this process (a local executor's worker)."""
    _worker["choice"] = choice


@contextmanager
def use_threads(choice: ThreadChoice) -> Iterator[ThreadChoice]:
    """torch and the loaded BLAS/OpenMP libraries use ``choice``'s threads inside the block."""
    import torch

    before = torch.get_num_threads()
    limits = None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it BLAS keeps its own setting
        threadpool_limits = None
    try:
        if threadpool_limits is not None:
            limits = threadpool_limits(limits={"blas": choice.blas, "openmp": choice.torch})
        torch.set_num_threads(choice.torch)
        yield choice
    finally:
        if limits is not None:
            limits.restore_original_limits()
        torch.set_num_threads(before)


def switch_threads(choice: ThreadChoice) -> None:
    """Inside :func:`use_threads`: use ``choice`` from now on (the block still restores the
    settings it found)."""
    import torch

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        threadpool_limits(limits={"blas": choice.blas, "openmp": choice.torch})
    torch.set_num_threads(choice.torch)
