"""Mutation checks of core/: does tests/core notice when the code is subtly wrong?

    .venv/bin/python bench/mutation.py [--sample 60] [--seed 0] [--out runs/mutation]
                                       [--module clip ...]

Each mutant changes one spot of one core/*.py file: a comparison flipped (`<` -> `<=`,
`==` -> `!=`, `in` -> `not in`, ...), an integer constant moved by +1 or -1, `+` <-> `-`,
`and` <-> `or`, a `not` dropped, or a returned True/False/constant flipped. The mutants are
applied one at a time to a copy of core/ and tests/core in a temporary folder (the working
tree is never touched); the module's own test file runs first (killed mutants die fast),
then, if it passed, the whole of tests/core. A mutant is *killed* when a test fails (or the
run times out), *survived* when every test passes. Survivors are either gaps in the tests or
equivalent mutants (same behaviour): read each one. `make mutation` runs it (CI's long tier);
the last run's survivors are listed in docs/testing.md.

The copy is written through `ast.unparse` for every file, unmutated ones included, and the
whole of tests/core must pass on it before any mutant runs, so a mutant differs from a
passing tree by its one change only. Output: a table on stdout and summary.json in --out.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLIPPED_COMPARISONS: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
FLIPPED_OPERATORS: dict[type, type] = {ast.Add: ast.Sub, ast.Sub: ast.Add}
FLIPPED_BOOLEANS: dict[type, type] = {ast.And: ast.Or, ast.Or: ast.And}


@dataclass(frozen=True)
class Mutant:
    module: str  # "clip" for core/clip.py
    node: int  # index of the mutated node in ast.walk order (deterministic for a source)
    kind: str  # what the mutation does, e.g. "< -> <=", "+1", "drop not"
    line: int
    source: str  # the original line, stripped


@dataclass
class Result:
    mutant: Mutant
    status: str  # "killed", "survived" or "timeout"
    seconds: float


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes inside type annotations: mutating them changes no behaviour."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, ast.AnnAssign | ast.arg) and node.annotation is not None:
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            annotations.append(node.returns)
        for a in annotations:
            inside.update(id(n) for n in ast.walk(a))
    return inside


def _mutations(node: ast.AST) -> Iterator[str]:
    """The mutation kinds that apply to one node."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        op = type(node.ops[0])
        if op in FLIPPED_COMPARISONS:
            yield f"{_symbol(op)} -> {_symbol(FLIPPED_COMPARISONS[op])}"
    elif isinstance(node, ast.BinOp) and type(node.op) in FLIPPED_OPERATORS:
        yield f"{_symbol(type(node.op))} -> {_symbol(FLIPPED_OPERATORS[type(node.op)])}"
    elif isinstance(node, ast.BoolOp):
        yield f"{_symbol(type(node.op))} -> {_symbol(FLIPPED_BOOLEANS[type(node.op)])}"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "drop not"
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        yield "+1"
        yield "-1"
    elif isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
        if node.value.value is True or node.value.value is False:
            yield "flip returned bool"
        elif node.value.value is not None:
            yield "return None"


def _symbol(op: type) -> str:
    return {
        ast.Lt: "<",
        ast.LtE: "<=",
        ast.Gt: ">",
        ast.GtE: ">=",
        ast.Eq: "==",
        ast.NotEq: "!=",
        ast.Is: "is",
        ast.IsNot: "is not",
        ast.In: "in",
        ast.NotIn: "not in",
        ast.Add: "+",
        ast.Sub: "-",
        ast.And: "and",
        ast.Or: "or",
    }[op]


def find_mutants(module: str, source: str) -> list[Mutant]:
    tree = ast.parse(source)
    skip = _annotation_nodes(tree)
    lines = source.splitlines()
    found = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip or not hasattr(node, "lineno"):
            continue
        for kind in _mutations(node):
            found.append(Mutant(module, index, kind, node.lineno, lines[node.lineno - 1].strip()))
    return found


def mutate(source: str, mutant: Mutant) -> str:
    """The source with the one mutation applied, written back by ast.unparse."""
    tree = ast.parse(source)
    node = list(ast.walk(tree))[mutant.node]
    if isinstance(node, ast.Compare):
        node.ops[0] = FLIPPED_COMPARISONS[type(node.ops[0])]()
    elif isinstance(node, ast.BinOp):
        node.op = FLIPPED_OPERATORS[type(node.op)]()
    elif isinstance(node, ast.BoolOp):
        node.op = FLIPPED_BOOLEANS[type(node.op)]()
    elif isinstance(node, ast.UnaryOp):
        return _replace(tree, node, node.operand)
    elif isinstance(node, ast.Constant):
        node.value += 1 if mutant.kind == "+1" else -1
    elif isinstance(node, ast.Return):
        value = node.value.value  # type: ignore[union-attr]
        node.value = ast.Constant(None if mutant.kind == "return None" else not value)
    return ast.unparse(tree)


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> str:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
            elif isinstance(value, list):
                setattr(parent, field, [new if v is old else v for v in value])
    return ast.unparse(tree)


def read_core() -> dict[str, str]:
    """The source of every core module, read once: the mutants and the copy use this snapshot
    even if the working tree changes during the run."""
    return {path.stem: path.read_text() for path in sorted((ROOT / "core").glob("*.py"))}


def copy_tree(dest: Path, sources: dict[str, str]) -> None:
    """core/ (round-tripped through ast.unparse), tests/core with the shared test helpers, and
    the pytest settings. Everything else (training, server, ...) is imported from the working
    tree, and imports core from the copy."""
    (dest / "core").mkdir()
    for module, source in sources.items():
        (dest / "core" / f"{module}.py").write_text(ast.unparse(ast.parse(source)) + "\n")
    shutil.copytree(ROOT / "tests" / "core", dest / "tests" / "core")
    if (ROOT / "tests" / "helpers").is_dir():
        shutil.copytree(ROOT / "tests" / "helpers", dest / "tests" / "helpers")
    shutil.copy(ROOT / "tests" / "__init__.py", dest / "tests" / "__init__.py")
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def run_tests(tree: Path, targets: list[str], timeout: float) -> str:
    # PYTHONPATH puts the copy's core/ ahead of the editable install of the working tree.
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *targets]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "survived" if done.returncode == 0 else "killed"


def check_copy_is_used(tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = "import core.clip, sys; sys.stdout.write(core.clip.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True
    )
    if not Path(where.stdout).is_relative_to(tree):
        raise SystemExit(f"mutation: the tests would import {where.stdout!r}, not the copy")


def run(mutants: list[Mutant], sources: dict[str, str], timeout_factor: float) -> Iterator[Result]:
    """Each mutant's result as soon as it is known."""
    with tempfile.TemporaryDirectory(prefix="gd-mutation-") as folder:
        tree = Path(folder)
        copy_tree(tree, sources)
        check_copy_is_used(tree)
        started = time.monotonic()
        if run_tests(tree, ["tests/core"], timeout=3600) != "survived":
            raise SystemExit("mutation: tests/core fails on the unmutated copy; fix that first")
        timeout = max(60.0, timeout_factor * (time.monotonic() - started))
        print(f"unmutated copy passes tests/core; {len(mutants)} mutants", flush=True)
        for i, m in enumerate(mutants, 1):
            target = tree / "core" / f"{m.module}.py"
            original = target.read_text()
            target.write_text(mutate(sources[m.module], m) + "\n")
            started = time.monotonic()
            own = f"tests/core/test_{m.module}.py"
            status = "survived"
            if (tree / own).is_file():
                status = run_tests(tree, [own], timeout)
            if status == "survived":
                status = run_tests(tree, ["tests/core"], timeout)
            target.write_text(original)
            print(f"[{i}/{len(mutants)}] {status:8} {_describe(m)}", flush=True)
            yield Result(m, status, time.monotonic() - started)


def _describe(m: Mutant) -> str:
    return f"core/{m.module}.py:{m.line} {m.kind}: {m.source}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sample", type=int, default=60, help="mutants to run, 0 = all (default 60)")
    p.add_argument("--seed", type=int, default=0, help="which sample (default 0)")
    p.add_argument("--module", nargs="*", help="only these core modules, e.g. clip metrics")
    p.add_argument("--out", type=Path, default=Path("runs/mutation"), help="summary.json here")
    p.add_argument(
        "--timeout-factor",
        type=float,
        default=3.0,
        help="a mutant's tests time out at this many times the unmutated run (default 3)",
    )
    p.add_argument("--list", action="store_true", help="print the mutants and stop")
    args = p.parse_args(argv)

    sources = read_core()
    modules = args.module or [name for name in sources if name != "__init__"]
    mutants = [m for name in modules for m in find_mutants(name, sources[name])]
    total = len(mutants)
    if 0 < args.sample < total:
        mutants = sorted(random.Random(args.seed).sample(mutants, args.sample), key=_order)
    if args.list:
        for m in mutants:
            print(_describe(m))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for result in run(mutants, sources, args.timeout_factor):
        results.append(result)
        write_summary(args.out / "summary.json", results, len(mutants), total, args)  # so far
    survivors = [r for r in results if r.status == "survived"]
    print(f"\n{len(results) - len(survivors)} of {len(results)} mutants killed ({total} possible)")
    print("survivors:" if survivors else "no survivors")
    for r in survivors:
        print(f"  {_describe(r.mutant)}")
    return 0


def write_summary(
    path: Path, results: list[Result], planned: int, total: int, args: argparse.Namespace
) -> None:
    survived = sum(r.status == "survived" for r in results)
    summary = {
        "possible": total,
        "planned": planned,
        "run": len(results),
        "killed": len(results) - survived,
        "survived": survived,
        "sample": args.sample,
        "seed": args.seed,
        "results": [
            {**asdict(r.mutant), "status": r.status, "seconds": r.seconds} for r in results
        ],
    }
    path.write_text(json.dumps(summary, indent=2) + "\n")


def _order(m: Mutant) -> tuple[str, int, int]:
    return (m.module, m.line, m.node)


if __name__ == "__main__":
    sys.exit(main())
