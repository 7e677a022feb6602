"""Executors: run independent pieces of work serially, over the machine's cores, or on a Ray cluster.

One interface, :meth:`Executor.map`: ``fn(context, item)`` is called for every item and an
:class:`Outcome` is yielded as each finishes (in completion order, not item order).  The
``context`` is shipped once per worker, not once per item, so large shared inputs (the
datasets of a benchmark) travel once.  A call that raises, or whose worker process dies,
yields an outcome with ``error`` set instead of ending the run.  Items are drawn from the
iterable only as workers free up, so an item may be prepared lazily (a policy trained
just before the cells that need it).  Closing the iterator (or Ctrl-C while waiting)
cancels what has not started, stops the workers, and keeps what has been yielded.
Consecutive ``map`` calls with the same ``context`` object reuse the workers of the local
pool (and Ray reuses its worker processes), so per-process caches survive from one call to
the next; :meth:`Executor.close` (or the ``with`` block's end) ends them.

- :class:`SerialExecutor`: in this process, in order;
- :class:`LocalExecutor`: a process pool over the machine's cores (the default);
- :class:`RayExecutor`: Ray tasks on a local Ray instance or an existing cluster
  (``pip install anomaly-gym[ray]``; ``address="auto"`` joins the cluster that
  ``ray start --head`` started on this machine).

Example:
    >>> from anomaly_gym.meta.executors import make_executor
    >>> with make_executor("serial") as ex:
    ...     sorted(o.value for o in ex.map(lambda ctx, x: ctx * x, [1, 2, 3], context=10))
    [10, 20, 30]
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: Names accepted by :func:`make_executor` (and ``--executor``).
EXECUTORS = ("serial", "local", "ray")
#: The message of an item whose worker process died while running it (alone, after a retry).
WORKER_DIED = "the worker process died while running this item (killed, out of memory, or a crash in native code)"
_END = object()


@dataclass
class Outcome:
    """The result of one item: ``value`` when ``fn`` returned, ``error`` (one line) when it raised or its worker died."""

    item: Any
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _error_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class Executor:
    """Base of the executors: ``map`` yields :class:`Outcome` objects as items finish; ``close`` frees the workers."""

    name = "base"
    workers = 1

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable, context: Any = None) -> Iterator[Outcome]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (a no-op where there are none)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


class SerialExecutor(Executor):
    """Every item in this process, in order."""

    name = "serial"

    def map(self, fn, items, context=None):
        for item in items:
            try:
                yield Outcome(item, fn(context, item))
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                yield Outcome(item, error=_error_line(exc))


# --------------------------------------------------------------------------- local processes

_CONTEXT: Any = None


def _init_worker(context: Any) -> None:
    """Worker start-up: keep the run's shared context; leave Ctrl-C to the parent, which stops the pool."""
    global _CONTEXT
    _CONTEXT = context
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _call(fn, item):
    return fn(_CONTEXT, item)


class LocalExecutor(Executor):
    """A process pool over this machine's cores.

    Args:
        workers: Worker processes (default: the number of cores).
        start_method: ``"fork"`` (fast start, the parent's imports are inherited; the default
            on Linux) or ``"spawn"`` (a fresh interpreter per worker; needed once CUDA is in use).
    """

    name = "local"

    def __init__(self, workers: int | None = None, start_method: str | None = None) -> None:
        workers = (os.cpu_count() or 1) if workers is None else int(workers)
        if workers < 1:
            raise ValueError(f"--workers must be a positive integer, got {workers}")
        self.workers = workers
        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or ("fork" if "fork" in methods else "spawn")
        self._kept: tuple[Any, ProcessPoolExecutor] | None = None

    def _pool(self, context: Any, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(self.start_method), initializer=_init_worker, initargs=(context,))

    def _shared_pool(self, context: Any) -> ProcessPoolExecutor:
        """The pool of the previous ``map`` when it had the same ``context`` object (its workers keep their caches), else a new one."""
        if self._kept is not None and self._kept[0] is context:
            return self._kept[1]
        self.close()
        pool = self._pool(context, self.workers)
        self._kept = (context, pool)
        return pool

    def map(self, fn, items, context=None):
        items = iter(items)
        pool = self._shared_pool(context)
        pending: dict[Future, Any] = {}
        try:
            while True:
                while len(pending) < self.workers and (item := next(items, _END)) is not _END:
                    pending[pool.submit(_call, fn, item)] = item
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                broken = []
                for fut in done:
                    item = pending.pop(fut)
                    outcome = self._outcome(fut, item)
                    if outcome is None:
                        broken.append(item)
                    else:
                        yield outcome
                if broken:  # a worker died: every item in flight failed with it; find the culprit alone
                    wait(pending)
                    broken += list(pending.values())
                    pending.clear()
                    _stop(pool)
                    for item in broken:
                        yield self._alone(fn, item, context)
                    pool = self._pool(context, self.workers)
                    self._kept = (context, pool)
        finally:
            if pending:  # closed early (Ctrl-C, an error): cancel what has not started, end the workers
                for fut in pending:
                    fut.cancel()
                self.close()

    def close(self) -> None:
        """End the worker processes kept between ``map`` calls."""
        if self._kept is not None:
            _stop(self._kept[1])
            self._kept = None

    @staticmethod
    def _outcome(fut: Future, item: Any) -> Outcome | None:
        try:
            return Outcome(item, fut.result())
        except BrokenProcessPool:
            return None
        except Exception as exc:
            return Outcome(item, error=_error_line(exc))

    def _alone(self, fn, item, context) -> Outcome:
        """Run ``item`` in a pool of its own: its own error, or :data:`WORKER_DIED` if it kills its worker again."""
        pool = self._pool(context, 1)
        try:
            outcome = self._outcome(pool.submit(_call, fn, item), item)
        finally:
            _stop(pool)
        if outcome is None:
            logger.warning("an item killed its worker process: %r", item)
            return Outcome(item, error=WORKER_DIED)
        return outcome


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down now: cancel what has not started, end the workers still running."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)


# --------------------------------------------------------------------------- Ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("the ray executor needs Ray: pip install 'anomaly-gym[ray]' (or pip install ray)") from None
    return ray


def _ray_call(fn, context, item):
    return fn(context, item)


class RayExecutor(Executor):
    """Ray tasks, one CPU each, on a local Ray instance or an existing cluster.

    Args:
        workers: Items in flight at once (default: the cluster's CPUs).  Without ``address``
            and with no Ray running in this process, a local instance with this many CPUs is
            started (and stopped by :meth:`close`).
        address: ``"auto"`` (the cluster started on this machine by ``ray start --head``) or
            ``HOST:PORT`` of a cluster's head node.  Every node needs anomaly-gym installed.
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        if workers is not None and int(workers) < 1:
            raise ValueError(f"--workers must be a positive integer, got {workers}")
        ray = self._ray = _import_ray()
        self._started = False
        self._context: tuple[Any, Any] | None = None
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
                else:
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
                    self._started = True
            except ConnectionError as exc:
                raise ValueError(f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head`") from None
        self.workers = int(workers or max(1, int(ray.cluster_resources().get("CPU", 1))))

    def map(self, fn, items, context=None):
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
        if self._context is None or self._context[0] is not context:  # the same context travels once per run
            self._context = (context, ray.put(context))
        context_ref = self._context[1]
        items = iter(items)
        pending: dict[Any, Any] = {}
        try:
            while True:
                while len(pending) < self.workers and (item := next(items, _END)) is not _END:
                    pending[remote.remote(fn, context_ref, item)] = item
                if not pending:
                    return
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield self._outcome(ref, pending.pop(ref))
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _outcome(self, ref, item) -> Outcome:
        ray = self._ray
        try:
            return Outcome(item, ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            return Outcome(item, error=_error_line(cause))
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError):
            return Outcome(item, error=WORKER_DIED)
        except ray.exceptions.RayError as exc:
            return Outcome(item, error=_error_line(exc))

    def close(self) -> None:
        self._context = None
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False


def make_executor(name: str = "local", *, workers: int | None = None, address: str | None = None, start_method: str | None = None) -> Executor:
    """The executor called ``name`` (``serial``, ``local`` or ``ray``).

    Raises:
        ValueError: An unknown name, a bad worker count, ``address`` without Ray, Ray missing
            or unreachable.
    """
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
    if address and name != "ray":
        raise ValueError("--address is for --executor ray")
    if name == "serial":
        if workers not in (None, 1):
            raise ValueError("the serial executor runs one item at a time; leave --workers out or use --executor local")
        return SerialExecutor()
    if name == "local":
        return LocalExecutor(workers, start_method=start_method)
    return RayExecutor(workers, address)
