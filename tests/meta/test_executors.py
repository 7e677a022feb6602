"""The executors: outcomes as items finish, errors and dead workers as outcomes, a clean stop when closed."""

from __future__ import annotations

import os
import sys
import time

import pytest
from anomaly_gym.meta.executors import WORKER_DIED, LocalExecutor, SerialExecutor, make_executor


def _scale(context, item):
    if item == "bad":
        raise RuntimeError("bad item on purpose")
    return context * item


def _die_on_three(context, item):
    if item == 3:
        os._exit(7)  # the worker process dies: no exception reaches the pool
    return item + context


def _sleep(context, item):
    time.sleep(context)
    return os.getpid()


@pytest.mark.parametrize("name", ["serial", "local"])
def test_every_item_gives_one_outcome_and_errors_are_outcomes(name):
    with make_executor(name, workers=None if name == "serial" else 2) as ex:
        outcomes = list(ex.map(_scale, [1, 2, "bad", 4], context=10))
    assert sorted(o.value for o in outcomes if o.ok) == [10, 20, 40]
    (bad,) = [o for o in outcomes if not o.ok]
    assert bad.item == "bad" and bad.error == "RuntimeError: bad item on purpose"


def test_a_dead_worker_costs_only_its_own_item():
    with LocalExecutor(2) as ex:
        outcomes = {o.item: o for o in ex.map(_die_on_three, range(6), context=100)}
    assert outcomes[3].error == WORKER_DIED
    assert {i: o.value for i, o in outcomes.items() if i != 3} == {0: 100, 1: 101, 2: 102, 4: 104, 5: 105}


def test_items_are_drawn_only_as_workers_free_up():
    drawn = []

    def items():
        for i in range(5):
            drawn.append(i)
            yield i

    it = LocalExecutor(2).map(_scale, items(), context=1)
    first = next(it)
    assert first.ok and len(drawn) <= 3  # two in flight, one more drawn once the first finished
    assert sorted([first.value] + [o.value for o in it]) == [0, 1, 2, 3, 4]


def test_closing_the_outcomes_stops_the_workers_at_once():
    it = LocalExecutor(2).map(_sleep, range(6), context=0.5)
    pid = next(it).value
    started = time.perf_counter()
    it.close()  # what Ctrl-C does: nothing more starts, the running items are stopped
    assert time.perf_counter() - started < 5
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_bad_choices_are_value_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("threads")
    with pytest.raises(ValueError, match="positive"):
        make_executor("local", workers=0)
    with pytest.raises(ValueError, match="--address is for --executor ray"):
        make_executor("local", address="auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ValueError, match=r"anomaly-gym\[ray\]"):
        make_executor("ray")
    assert isinstance(make_executor("serial"), SerialExecutor)
