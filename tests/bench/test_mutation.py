"""bench/mutation.py: each mutant changes exactly one spot, and only where behaviour lives."""

import importlib.util
import sys
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "mutation", Path(__file__).resolve().parents[2] / "bench" / "mutation.py"
)
mutation = importlib.util.module_from_spec(SPEC)
sys.modules["mutation"] = mutation  # dataclasses look their module up there
SPEC.loader.exec_module(mutation)

SOURCE = '''
def f(a: int = 3, b=None) -> bool:
    """Docstring."""
    if not a < b:
        return True
    return a + 1 == 2 and b
'''


def test_every_kind_of_mutation_changes_one_spot():
    mutants = mutation.find_mutants("m", SOURCE)
    got = {m.kind: mutation.mutate(SOURCE, m).splitlines()[2:] for m in mutants}
    # By hand: the docstring is never mutated, the default 3 is (and 1 and 2).
    assert sorted(m.kind for m in mutants) == sorted(
        ["+1", "-1", "+1", "-1", "+1", "-1", "drop not", "< -> <=", "flip returned bool",
         "+ -> -", "== -> !=", "and -> or"]
    )  # fmt: skip
    assert got["< -> <="][0] == "    if not a <= b:"
    assert got["drop not"][0] == "    if a < b:"
    assert got["flip returned bool"][1] == "        return False"
    assert got["+ -> -"][2] == "    return a - 1 == 2 and b"
    assert got["== -> !="][2] == "    return a + 1 != 2 and b"
    assert got["and -> or"][2] == "    return a + 1 == 2 or b"
    moved = {mutation.mutate(SOURCE, m).splitlines()[0] for m in mutants if m.kind == "+1"}
    assert "def f(a: int=4, b=None) -> bool:" in moved
    lowered = {mutation.mutate(SOURCE, m).splitlines()[0] for m in mutants if m.kind == "-1"}
    assert "def f(a: int=2, b=None) -> bool:" in lowered
