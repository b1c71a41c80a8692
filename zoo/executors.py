"""Where the (row, seed) runs of ``zoo leaderboard reproduce`` execute: in this process, in local worker processes
(``--jobs N``), or as Ray tasks (``--executor ray``).

Each executor takes :class:`Job` s and hands back every job's outcome, its results record or a :class:`RunFailure`,
as it finishes; the caller writes the results files, so they are written on the caller's machine, whole. Local
workers are forked from a server process that imported torch, Lightning and the board's task once, and each runs
one job after another, as the in-process path does (every run seeds itself, so a run's results do not depend on
which runs its worker ran before: the tests check ``--jobs 2`` against ``--jobs 1``). Ray tasks run in Ray's own
workers, which Ray reuses in the same way; a failed Ray task is retried once, except for a bad config, which would
fail again.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol

from zoo import leaderboard
from zoo.errors import ZooValueError
from zoo.leaderboard import BoardSpec, RowSpec, RunFailure

Outcome = dict[str, Any] | RunFailure
EXECUTORS = ("local", "ray")
LOG_TAIL_CHARS = 4000  # of a failed run's log, carried back to the caller from a worker on another machine


@dataclass(frozen=True)
class Job:
    """One (row, seed) run of a board's tier, with what a worker needs to run it as the caller would.

    Args:
        threads: torch threads in the worker (None: leave the worker's default).
        cwd: the caller's working directory; run dirs and logs go under its ``runs/`` when the worker can reach it.
        cpus, gpus: what the run asks a Ray scheduler for.
    """

    spec: BoardSpec
    row: RowSpec
    tier: str
    seed: int
    threads: int | None
    cwd: str
    cpus: float = 1.0
    gpus: float = 0.0

    @property
    def log(self) -> Path:
        return leaderboard.log_path(self.spec.name, self.row.name, self.tier, self.seed)

    @property
    def name(self) -> str:
        return f"{self.row.name} s{self.seed}"


def run_job(job: Job) -> Outcome:
    """A job in a worker process: its output goes to the job's log, and an exception becomes a :class:`RunFailure`
    (with the log's tail, for a caller on another machine). The worker's own stdout and stderr are restored after,
    since a Ray worker goes on to run other tasks."""
    import sys

    import torch

    if os.path.isdir(job.cwd):
        os.chdir(job.cwd)
    job.log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with job.log.open("w", encoding="utf-8") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
        if job.threads is not None:
            torch.set_num_threads(job.threads)
        try:
            return leaderboard.run_row(job.spec, job.row, job.tier, job.seed, progress=False)
        except Exception as err:  # reported by the caller; the other runs go on
            failure = leaderboard.run_failure(job.row, job.seed, err, job.log)
            sys.stdout.flush()
            sys.stderr.flush()
            tail = job.log.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
            return replace(failure, log_tail=tail)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


class Executor(Protocol):
    """Runs submitted jobs; ``wait_any`` blocks until at least one finishes and returns the finished ones;
    ``running`` lists the jobs started and not yet returned."""

    def submit(self, job: Job) -> None: ...

    def wait_any(self) -> list[tuple[Job, Outcome]]: ...

    def running(self) -> list[Job]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class InProcess:
    """One run after another in this process (``--jobs 1``), under this process's torch threads."""

    def __init__(self) -> None:
        self.queue: deque[Job] = deque()

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    def wait_any(self) -> list[tuple[Job, Outcome]]:
        job = self.queue.popleft()
        try:
            outcome: Outcome = leaderboard.run_row(job.spec, job.row, job.tier, job.seed, progress=False)
        except Exception as err:  # reported; the other runs go on
            job.log.unlink(missing_ok=True)  # a log of an earlier reproduce's run
            outcome = leaderboard.run_failure(job.row, job.seed, err, job.log)
        return [(job, outcome)]

    def running(self) -> list[Job]:
        return list(self.queue)[:1]

    def stop(self) -> None:
        self.queue.clear()

    def close(self) -> None:
        pass


def _work(conn: Any) -> None:
    """A local worker's body: run the jobs it is sent, one after another, and send each outcome back; ``None`` or
    a closed pipe ends it. Ctrl-C is left to the caller, which stops the workers."""
    import multiprocessing
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked-server child inherits the fork server as its default start method; a run's own process pools
    # (statistical baselines) would then start a fork server of their own each time. Back to the platform default.
    multiprocessing.set_start_method(None, force=True)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(run_job(job))


@dataclass
class _Worker:
    process: Any
    conn: Any
    job: Job | None = None


class LocalProcesses:
    """``slots`` worker processes, each running one job after another as the in-process path does, forked from a
    server that imported ``preload`` (spawned where the platform has no fork server), so a worker starts in a
    fraction of a second. Workers inherit the environment the server started with, so the numerics pinned before
    torch loaded hold in them. A worker that dies (a signal, out of memory) fails its own run only; a new one takes
    its place."""

    def __init__(self, slots: int, preload: list[str]) -> None:
        import multiprocessing

        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        self.context = multiprocessing.get_context(method)
        if method == "forkserver":
            from multiprocessing import forkserver

            self.context.set_forkserver_preload(preload)
            forkserver.ensure_running()  # the server imports ``preload`` now, while the caller goes on
        self.slots = slots
        self.waiting: deque[Job] = deque()
        self.workers: list[_Worker] = []

    def submit(self, job: Job) -> None:
        self.waiting.append(job)
        self._fill()

    def _fill(self) -> None:
        for worker in self.workers:
            if worker.job is None and self.waiting:
                worker.job = self.waiting.popleft()
                worker.conn.send(worker.job)
        while self.waiting and len(self.workers) < self.slots:
            ours, theirs = self.context.Pipe()
            # not a daemon: a run may start processes of its own (statistical baselines fit series in a pool)
            process = self.context.Process(target=_work, args=(theirs,), name=f"zoo-worker-{len(self.workers)}")
            process.start()
            theirs.close()
            job = self.waiting.popleft()
            ours.send(job)
            self.workers.append(_Worker(process, ours, job))

    def wait_any(self) -> list[tuple[Job, Outcome]]:
        from multiprocessing.connection import wait

        busy = [w for w in self.workers if w.job is not None]
        ready = set(wait([h for w in busy for h in (w.conn, w.process.sentinel)]))
        out = []
        for worker in [w for w in busy if w.conn in ready or w.process.sentinel in ready]:
            job, outcome = worker.job, None
            assert job is not None
            if worker.conn.poll():
                try:
                    outcome = worker.conn.recv()
                except (EOFError, OSError):  # the worker's end closed without an outcome: it died or is exiting
                    pass
            if outcome is None:
                worker.process.join()
                died = RuntimeError(f"the worker process died (exit code {worker.process.exitcode})")
                outcome = leaderboard.run_failure(job.row, job.seed, died, job.log)
                worker.conn.close()
                self.workers.remove(worker)
            worker.job = None
            out.append((job, outcome))
        self._fill()
        return out

    def running(self) -> list[Job]:
        return [w.job for w in self.workers if w.job is not None]

    def stop(self) -> None:
        """Forget the runs not started and terminate the workers (the results of their runs were never written)."""
        self.waiting.clear()
        for worker in self.workers:
            worker.process.terminate()
        self._join()

    def close(self) -> None:
        """End the idle workers."""
        for worker in self.workers:
            worker.conn.send(None)
        self._join()

    def _join(self) -> None:
        for worker in self.workers:
            worker.process.join()
            worker.conn.close()
        self.workers.clear()


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ZooValueError("--executor ray needs Ray: pip install 'moe-zoo[cluster]'") from None
    return ray


class RayTasks:
    """Jobs as Ray tasks, each asking for its ``cpus`` and ``gpus``, on the cluster at ``address`` or on a local
    instance of ``num_cpus`` CPUs started here (and shut down by :meth:`close`). The pinned numerics go to the
    workers through the runtime environment, since Ray workers do not inherit this process's environment."""

    def __init__(self, address: str | None, num_cpus: int | None, *, retries: int = 1,
                 report: Callable[[str], None] = print) -> None:
        ray = import_ray()
        self.ray, self.retries, self.report = ray, retries, report
        self.started = not ray.is_initialized()
        if self.started:
            env = {k: os.environ[k] for k in leaderboard.REPRODUCIBLE_NUMERICS if k in os.environ}
            local = {} if address else {"num_cpus": num_cpus}
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": env}, **local)
            except ConnectionError as err:
                raise ZooValueError(f"--address {address}: no Ray cluster there ({err})") from None
        self.remote = ray.remote(run_job)
        self.refs: dict[Any, tuple[Job, int]] = {}

    def submit(self, job: Job, attempt: int = 0) -> None:
        ref = self.remote.options(num_cpus=job.cpus, num_gpus=job.gpus, max_retries=0,
                                  name=f"{job.spec.name}/{job.name}").remote(job)
        self.refs[ref] = (job, attempt)

    def wait_any(self) -> list[tuple[Job, Outcome]]:
        out = []
        while not out:
            ready, _ = self.ray.wait(list(self.refs), num_returns=1)
            for ref in ready:
                job, attempt = self.refs.pop(ref)
                try:
                    outcome = self.ray.get(ref)
                except Exception as err:  # the task's worker died or Ray could not run it
                    outcome = leaderboard.run_failure(job.row, job.seed, err, job.log)
                if isinstance(outcome, RunFailure) and outcome.exit_code != 2 and attempt < self.retries:
                    self.report(f"retrying {job.spec.name} {job.tier} {outcome.line()}")
                    self.submit(job, attempt + 1)
                    continue
                out.append((job, outcome))
        return out

    def running(self) -> list[Job]:
        """The jobs submitted and not returned: Ray may still hold some of them back for resources."""
        return [job for job, _ in self.refs.values()]

    def stop(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        self.refs.clear()
        self.close()

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
