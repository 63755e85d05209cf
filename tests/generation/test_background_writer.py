"""The storyboard's background writer (generation/background_writer.py): jobs run in the order given on one
thread, a full queue makes `submit` wait (memory stays bounded), a job's error comes back through its Future,
and closing on an error drops the jobs not yet started."""

from __future__ import annotations

import threading

import pytest

from castkeep.generation.background_writer import BackgroundWriter


def test_jobs_run_in_order_on_one_thread_and_errors_come_back():
    threads, order = set(), []

    def job(number):
        threads.add(threading.get_ident())
        order.append(number)
        if number == 3:
            raise OSError(28, "No space left on device")
        return number * 10

    with BackgroundWriter(max_pending=2) as writer:
        futures = [writer.submit(lambda number=number: job(number)) for number in range(6)]
        assert [f.result() for f in futures[:3]] == [0, 10, 20]
        with pytest.raises(OSError, match="No space left"):
            futures[3].result()
        assert [f.result() for f in futures[4:]] == [40, 50]  # the caller decides what an error stops
    assert order == list(range(6)) and len(threads) == 1 and threading.get_ident() not in threads
    assert writer.busy_s > 0
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(lambda: None)


def test_a_full_queue_makes_submit_wait_and_an_error_drops_what_is_queued():
    release = threading.Event()
    ran = []
    submitted = []

    def blocked():
        release.wait(10)
        ran.append("blocked")

    writer = BackgroundWriter(max_pending=2)
    futures = [writer.submit(blocked)]

    def submit_more():
        for number in range(3):
            futures.append(writer.submit(lambda number=number: ran.append(number)))
            submitted.append(number)

    producer = threading.Thread(target=submit_more)
    producer.start()
    producer.join(0.5)
    assert submitted == [0, 1] and producer.is_alive()  # one running, two queued: the third waits
    release.set()
    producer.join(10)
    assert submitted == [0, 1, 2]
    futures[-1].result(10)
    assert ran == ["blocked", 0, 1, 2]

    release.clear()
    with pytest.raises(KeyError), BackgroundWriter(max_pending=4) as writer:
        running = writer.submit(blocked)
        queued = [writer.submit(lambda: ran.append("late")) for _ in range(3)]
        threading.Timer(0.2, release.set).start()
        raise KeyError("the caller failed")
    assert running.done() and all(f.cancelled() for f in queued) and "late" not in ran
