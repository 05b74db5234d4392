"""The CPU budget of a process: torch threads, the OpenMP pool's size and wait policy, the process priority.

A cell PC runs the inspector and, now and then, the trainer on the same few cores. Two torch processes
that each use every core oversubscribe them: OpenMP threads spin at every barrier for a thread that is not
running (one measurement: a head-training epoch went from 1.7 s to 20 s), and parts wait. So the nodes
(``threads`` / ``interop_threads`` / ``nice`` parameters) and ``mentor3ad train`` (``--threads``,
``--nice``) apply a :class:`CpuBudget` once at start-up, before torch does any work
(:func:`apply_budget`):

* ``threads``: torch intra-op threads (``torch.set_num_threads``: ATen's OpenMP pool, MKL, oneDNN; every
  Python thread follows it unless it chose otherwise: the inspector's inference thread owns them and its
  other threads run torch serially, :func:`serial_torch`), and ``OMP_NUM_THREADS`` /
  ``MKL_NUM_THREADS`` for child processes and for OpenMP runtimes not loaded yet; 0 = torch's default (one
  per core);
* ``interop_threads``: ``torch.set_num_interop_threads`` (possible only before the first inter-op work;
  otherwise a note and unchanged); 0 = torch's default;
* ``nice``: added to the niceness of every thread of the process, as ``nice -n`` does (threads started
  later inherit it); a negative value needs CAP_SYS_NICE (otherwise a note and unchanged). A process that
  yields (nice > 0) also gets ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set: its idle OpenMP threads
  sleep at once instead of spinning on cores the other process needs (libgomp reads it when it is loaded,
  so it only takes effect before torch is imported; otherwise a note).

open3d (the 0.20 wheels: TBB, no OpenMP, so ``OMP_NUM_THREADS`` does not reach it) computes normals and FPFH
on every core (measured 2026-12-06 on 2 cores: FPFH of 20,000 points 0.33 s wall for 0.66 s CPU; on one core
0.62 s): ``threads`` > 0 also bounds it (``open3d.utility.set_max_threads``).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, List

NICE_RANGE = (-20, 19)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class CpuBudget:
    """threads / interop_threads: torch's intra- / inter-op threads (0 = torch's default); nice: niceness
    increment (0 = unchanged; > 0 also means OMP_WAIT_POLICY=PASSIVE)."""

    threads: int = 0
    interop_threads: int = 0
    nice: int = 0

    def problem(self) -> str:
        """Why the budget is invalid ('' when it is valid)."""
        if self.threads < 0 or self.interop_threads < 0:
            return f"threads and interop_threads must be >= 0 (0: torch's default), got {self.threads}, " \
                   f"{self.interop_threads}"
        low, high = NICE_RANGE
        if not low <= self.nice <= high:
            return f"nice must be an increment in [{low}, {high}], got {self.nice}"
        return ""


@dataclass
class AppliedBudget:
    """What a process runs with after :func:`apply_budget`: torch threads, niceness, wait policy, notes."""

    threads: int
    interop_threads: int
    nice: int
    omp_wait_policy: str
    notes: List[str] = field(default_factory=list)
    open3d_threads: int = 0  # 0: open3d's default (every core)

    def describe(self) -> str:
        """One log line: 'torch threads 1, interop 1, nice 19, OMP_WAIT_POLICY PASSIVE, open3d threads 1' (+ notes)."""
        text = (f"torch threads {self.threads}, interop threads {self.interop_threads}, nice {self.nice}, "
                f"OMP_WAIT_POLICY {self.omp_wait_policy or 'default'}, open3d threads {self.open3d_threads or 'all'}")
        return text + "".join(f"; {note}" for note in self.notes)

    def to_dict(self) -> Dict[str, object]:
        return {"threads": self.threads, "interop_threads": self.interop_threads, "nice": self.nice,
                "omp_wait_policy": self.omp_wait_policy, "open3d_threads": self.open3d_threads,
                "notes": list(self.notes)}


def thread_ids() -> List[int]:
    """Ids of this process's threads (Linux: /proc/self/task; elsewhere the process id only)."""
    try:
        return sorted(int(name) for name in os.listdir("/proc/self/task"))
    except OSError:
        return [os.getpid()]


def _renice(increment: int, notes: List[str]) -> None:
    """Add ``increment`` to the niceness of every thread (Linux sets it per thread; new threads inherit it)."""
    if not increment:
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    target = min(max(current + increment, NICE_RANGE[0]), NICE_RANGE[1])
    try:
        for tid in thread_ids():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, target)
            except ProcessLookupError:  # a thread that ended meanwhile
                pass
    except PermissionError:
        notes.append(f"nice {increment:+d} refused (a higher priority needs CAP_SYS_NICE): niceness stays "
                     f"{current}")


def apply_budget(budget: CpuBudget) -> AppliedBudget:
    """Apply ``budget`` to this process (see the module docstring); ValueError for an invalid one."""
    problem = budget.problem()
    if problem:
        raise ValueError(problem)
    notes: List[str] = []
    torch_loaded = "torch" in sys.modules
    if budget.threads:
        for name in THREAD_ENV:
            os.environ[name] = str(budget.threads)
    if budget.nice > 0 and not os.environ.get("OMP_WAIT_POLICY"):
        if torch_loaded:
            notes.append("OMP_WAIT_POLICY=PASSIVE not applied: torch was imported first")
        else:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _renice(budget.nice, notes)
    import torch

    if budget.threads:
        torch.set_num_threads(budget.threads)
    if budget.interop_threads and budget.interop_threads != torch.get_num_interop_threads():
        try:
            torch.set_num_interop_threads(budget.interop_threads)
        except RuntimeError:
            notes.append(f"interop threads {budget.interop_threads} not applied: torch already started its "
                         "inter-op pool")
    return AppliedBudget(threads=torch.get_num_threads(), interop_threads=torch.get_num_interop_threads(),
                         nice=os.getpriority(os.PRIO_PROCESS, 0),
                         omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", ""), notes=notes,
                         open3d_threads=_limit_open3d(budget.threads, notes))


def _limit_open3d(threads: int, notes: List[str]) -> int:
    """Bound open3d's TBB threads to ``threads`` (0: leave its default); -> the limit in force (0: none)."""
    if not threads:
        return 0
    try:
        import open3d
    except ImportError:
        return 0  # nothing to bound (the 3D backbones that need it say so when they are built)
    if not hasattr(open3d.utility, "set_max_threads"):
        notes.append(f"open3d {open3d.__version__} cannot bound its threads: normals and FPFH use every core")
        return 0
    open3d.utility.set_max_threads(int(threads))
    return int(open3d.utility.get_max_threads())


@contextmanager
def serial_torch() -> Iterator[None]:
    """Within the block, the calling thread's torch work runs on it alone, without an OpenMP team of its own
    (its thread count is restored afterwards).

    libgomp keeps a team of threads for every thread that has run parallel work; once a process holds more
    OpenMP threads than cores it throttles their spin-waits, and every small parallel operation then waits for
    a sleeping thread. Measured on 2 cores: the cluster filter took 6 ms per part on the thread that owns the
    only team and 24-27 ms on an inference thread after the start-up thread had loaded and self-tested the
    model with 2 threads; the inspector answered 80-90 ms later than the same pipeline in one thread. The
    inspector's model loads (``ModelSlot.load``: start-up, lifecycle configure, background reloads) run inside
    this block, so the inference thread's team is the process's only one (:func:`parallel_torch_thread`)."""
    import torch

    before = torch.get_num_threads()  # torch reads the process-wide count lazily, once per thread: read it now
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parallel_torch_thread(threads: int) -> None:
    """The calling thread runs torch's parallel work with ``threads`` (>= 1) threads: the thread that owns the
    process's CPU budget (the inspector's inference thread). Threads started later follow the last call."""
    import torch

    torch.get_num_threads()  # torch reads the process-wide count lazily, once per thread: read it now, so that
    torch.set_num_threads(max(1, int(threads)))  # a later call on another thread cannot change this one's


__all__ = ["CpuBudget", "AppliedBudget", "apply_budget", "thread_ids", "NICE_RANGE", "serial_torch",
           "parallel_torch_thread"]
