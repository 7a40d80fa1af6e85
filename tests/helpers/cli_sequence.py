"""Several `gd-train` commands one after another in one process:
`python -m tests.helpers.cli_sequence pretrain ... --then detect ...`. Under torchrun each rank
runs them in turn in one process group, joined by the first command and left after the last,
as `gd-train pipeline` runs its stages (leaving the group and joining it again in the same
processes can hang in gloo's rendezvous). The ranks' processes start once, not once a command
(torch's import and the process group's start are most of a tiny stage's time)."""

import itertools
import os
import sys

from training import distributed
from training.cli import main as gd_train

THEN = "--then"


def commands(argv: list[str]) -> list[list[str]]:
    """argv split at each `--then`."""
    return [list(g) for is_sep, g in itertools.groupby(argv, lambda a: a == THEN) if not is_sep]


def joined(commands: list[list[str]]) -> list[str]:
    """The argv that `commands` splits back into."""
    return [arg for k, c in enumerate(commands) for arg in ([THEN] if k else []) + c]


def main(argv: list[str]) -> int:
    leave = distributed.cleanup
    distributed.cleanup = lambda: None  # each command's `finally`: the group stays joined
    try:
        for command in commands(argv):
            code = gd_train(command)
            if code != 0:
                return code
        return 0
    finally:
        distributed.cleanup = leave
        leave()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Everything is written and the group left: skip the interpreter's finalization, which
    # tears down torch's and dynamo's thousands of modules for ~1 CPU s and seconds of wall
    # a rank (an exception above still exits the usual way, with its traceback).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
