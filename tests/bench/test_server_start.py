"""bench/server_start.py's reading of a process's CPU time from /proc (its start-up figures)."""

import importlib.util
import os
import resource
import sys
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "server_start", Path(__file__).resolve().parents[2] / "bench" / "server_start.py"
)
server_start = importlib.util.module_from_spec(SPEC)
sys.modules["server_start"] = server_start
SPEC.loader.exec_module(server_start)


def test_cpu_seconds_are_the_process_and_its_waited_for_children():
    sum(range(300_000))  # some CPU of our own to read
    read = server_start.cpu_s(os.getpid())
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    want = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    # /proc counts in clock ticks: each of its four fields is short by under one tick
    assert want - 4 / server_start.TICKS - 0.01 <= read <= want
