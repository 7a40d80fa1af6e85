"""What one gd-serve start costs: CPU seconds and wall seconds until /readyz first answers.

    .venv/bin/python bench/server_start.py [--runs 5] [--before OLD_TREE] [-- GD-SERVE ARGS]

Starts the real `python -m server.cli --model <tiny bundle>` (tests/helpers/tiny_bundle.py) on
loopback `--runs` times, with a fresh SQLite event store each time (the default
configuration: the event store on, no rules, no MQTT; `--restart`: one store for all the
starts of a tree, which then find its schema current, as a restart does), polls /readyz every
5 ms and, the moment it first answers, reads the process's CPU time (user + system, its own
and its waited-for children's) from /proc/PID/stat; then stops it. Prints each run and the
medians.

`--before OLD_TREE` also starts the server of another checkout of this repository (e.g. one
made with `git worktree add /tmp/old HEAD`), alternating old/new, and prints both medians and
their ratio: the same machine, the same moment, the same bundle. Arguments after `--` are
passed to gd-serve (e.g. `-- --events-db off`).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.served import free_port  # noqa: E402
from tests.helpers.tiny_bundle import make_bundle  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
START_S = 120.0  # only against a hang


def cpu_s(pid: int) -> float:
    """utime + stime + cutime + cstime of `pid`, in seconds (proc(5): fields 14-17)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return sum(int(f) for f in fields[11:15]) / TICKS


def start_once(tree: Path, bundle: Path, data: Path, args: list[str]) -> tuple[float, float]:
    """One start of the server in `tree` with its state in `data`: (CPU s, wall s) at its
    first /readyz answer."""
    port = free_port()
    env = {**os.environ, "GD_THREADS": "1", "GD_DATA_DIR": str(data), "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "server.cli", "--model", str(bundle), "--no-auth"]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning", *args],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(timeout=5) as http:
            while True:
                try:
                    http.get(f"http://127.0.0.1:{port}/readyz")
                    return cpu_s(proc.pid), time.monotonic() - t0
                except httpx.TransportError:
                    if proc.poll() is not None:
                        said = proc.stderr.read().decode()  # type: ignore[union-attr]
                        raise SystemExit(f"gd-serve exited:\n{said}") from None
                    if time.monotonic() - t0 > START_S:
                        raise SystemExit("gd-serve did not answer /readyz") from None
                    time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def report(name: str, runs: list[tuple[float, float]]) -> tuple[float, float]:
    cpu = statistics.median(c for c, _ in runs)
    wall = statistics.median(w for _, w in runs)
    each = ", ".join(f"{c:.2f}" for c, _ in runs)
    print(f"{name}: median {cpu:.2f} CPU s, {wall:.2f} s wall to /readyz (CPU per run: {each})")
    return cpu, wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=5, help="starts per tree (default: 5)")
    p.add_argument(
        "--before",
        type=Path,
        metavar="OLD_TREE",
        help="another checkout to compare with, started alternately (default: none)",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="the starts of a tree share one event store (all but the first find it current)",
    )
    p.add_argument("serve_args", nargs="*", help="arguments for gd-serve, after `--`")
    args = p.parse_args(argv)
    trees = {"before": args.before.resolve()} if args.before else {}
    trees["after" if args.before else "this tree"] = ROOT
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        bundle = work / "bundle"
        make_bundle(bundle)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        kept = {name: work / f"{name}-data" for name in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                data = kept[name] if args.restart else Path(tempfile.mkdtemp(dir=work))
                runs[name].append(start_once(tree, bundle, data, args.serve_args))
        medians = {name: report(name, r) for name, r in runs.items()}
    if args.before:
        (cb, wb), (ca, wa) = medians["before"], medians["after"]
        print(f"after/before: {ca / cb:.2f} of the CPU, {wa / wb:.2f} of the wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
