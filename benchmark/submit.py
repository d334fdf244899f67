"""``python -m benchmark submit ID``: the one command between a new attack or defense and its pull request.

It does, in order, what CONTRIBUTING.md asks of a submission, and stops at the first step that fails:

1. **preflight** (no compute): the id is registered, each suite has cells for it, the tree is committed
   (a record computed from uncommitted code is stale) and the sandbox is available;
2. **run** the method's cells of each suite (``run --only attack=ID --stale``) into the committed results;
3. **board**: ``leaderboard/README.md``, ``index.html`` and the figures re-rendered from the records;
4. **verify**: re-compute the new records from an empty cache (up to ``--verify-seconds`` of their recorded
   compute, a seeded sample beyond) and compare every metric;
5. **check**: ``leaderboard --check`` (fresh, sandboxed, current, no suite cell without a record);

then prints the text to paste into the pull request: the steps with their times, the method's rows on the
board, the verify table and the files to commit.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.plugins import catalogue
from benchmark.provenance import REPO_ROOT
from benchmark.results import DEFAULT_RESULTS, code_version, device_info, uncommitted_files
from benchmark.runner import run_suite, select_cells
from benchmark.suite import expand_cells, load_suite
from benchmark.utils import resolve_device
from benchmark.verify import choose_within, comparison_table, failed, verify_records
from benchmark.workers import sandboxed
from leaderboard.render import _rows, headline_blocks, load_records

KINDS = ("attack", "defense")


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    ok: bool = True
    summary: str = ""


@dataclass
class Submission:
    plugin_id: str
    kind: str
    module: str
    suites: list[str]
    steps: list[Step] = field(default_factory=list)
    cell_ids: dict[str, list[str]] = field(default_factory=dict)  # suite → the method's cells
    verify_table: str = ""

    @property
    def only(self) -> str:
        return f"{self.kind}={self.plugin_id}"


class SubmitError(Exception):
    """A preflight problem: said before anything is computed."""


def timed(submission: Submission, name: str, work: Callable[[], tuple[bool, str]]) -> bool:
    """Run one step, record its time, outcome and one-line summary; print the summary as it ends."""
    start = time.perf_counter()
    ok, summary = work()
    step = Step(name, time.perf_counter() - start, ok, summary)
    submission.steps.append(step)
    print(f"[{'ok' if ok else 'FAILED'}] {name} ({step.seconds:.0f} s): {summary}", flush=True)
    return ok


# ------------------------------------------------------------------------------------------------ preflight
def find_kind(plugin_id: str, kind: str | None) -> tuple[str, str]:
    """(kind, module) of a registered id; a clear error naming the valid ids otherwise."""

    plugins = catalogue()
    kinds = [k for k in KINDS if plugin_id in plugins.of(k) and (kind is None or k == kind)]
    if not kinds:
        valid = {k: sorted(plugins.of(k)) for k in ((kind,) if kind else KINDS)}
        problems = "; ".join(f"{k}s: {', '.join(v)}" for k, v in valid.items())
        raise SubmitError(f"no {kind or 'attack or defense'} has id {plugin_id!r} (registered {problems}); a new module "
                          f"goes in attacks/{plugin_id}.py or defenses/{plugin_id}.py, or pass --plugins MODULE"
                          + "".join(f"\n  could not load: {p}" for p in plugins.problems))
    if len(kinds) > 1:
        raise SubmitError(f"{plugin_id!r} is both an attack and a defense: pass --kind attack or --kind defense")
    return kinds[0], plugins.get(kinds[0], plugin_id).module


def suite_cells(suite: Any, only: str) -> list[Any]:

    return select_cells(expand_cells(suite)[0], [only])


def preflight(args: argparse.Namespace) -> tuple[Submission, list[Any]]:
    """Every problem that would waste the compute, before any of it (all of them at once)."""

    kind, module = find_kind(args.id, args.kind)
    submission = Submission(args.id, kind, module, list(args.suites))
    problems, suites = [], []
    for name in args.suites:
        suite = load_suite(name, list(args.overrides))
        cells = suite_cells(suite, submission.only)
        if not cells:
            problems.append(f"suite {suite.name} has no cell with {submission.only}: add an entry for it to "
                            f"benchmark/suites/{suite.name}.yaml (CONTRIBUTING.md, step 3)")
        submission.cell_ids[suite.name] = [c.id for c in cells]
        suites.append(suite)
    dirty = uncommitted_files(REPO_ROOT)
    if dirty:
        problems.append("commit first: records computed from uncommitted code are stale and `leaderboard --check` "
                        f"fails on them; uncommitted: {', '.join(dirty[:8])}{' …' if len(dirty) > 8 else ''}")
    if problems:
        raise SubmitError("\n".join(problems))
    return submission, suites


# ------------------------------------------------------------------------------------------------ steps
def run_step(args: argparse.Namespace, submission: Submission, suite: Any) -> tuple[bool, str]:
    summary = run_suite(suite, results_dir=DEFAULT_RESULTS, cache_dir=args.cache_dir, device=args.device,
                        only=[submission.only], stale=True)
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.by_status.items())) or "nothing new"
    ok = not summary.by_status.get("error")
    return ok, (f"{len(summary.computed)} cells computed ({statuses}), {len(summary.skipped)} already current; "
                "an error cell's message is in its record")


def board_step(cli: CliSteps) -> tuple[bool, str]:
    readme = Path("leaderboard/README.md")
    cli.write_board(DEFAULT_RESULTS, readme, readme.parent / "index.html")
    return True, f"{readme}, {readme.parent / 'index.html'} and the figures written"


def verify_step(args: argparse.Namespace, submission: Submission) -> tuple[bool, str]:
    records = [json.loads((DEFAULT_RESULTS / suite / f"{cell_id}.json").read_text())
               for suite, ids in submission.cell_ids.items() for cell_id in ids]
    records = [r for r in records if r.get("status") == "ok"]
    if not records:
        return False, "no cell of the method finished with status ok: nothing to verify"
    chosen = choose_within(records, args.verify_seconds)
    rows = verify_records(chosen, device=args.device)
    bad = failed(rows)
    submission.verify_table = comparison_table(rows)
    return not bad, (f"{len(rows) - len(bad)} of {len(rows)} re-computed records reproduce "
                     f"({len(chosen)} of {len(records)} chosen within {args.verify_seconds:g} s of recorded compute)")


def check_step(cli: CliSteps) -> tuple[bool, str]:
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        code = cli.check()
    lines = [line for line in errors.getvalue().splitlines() if line.strip()]
    if code == 0:
        return True, "board, page and figures current; every record fresh and sandboxed; no suite cell without a record"
    return False, "; ".join(lines[:6]) + (f" (+{len(lines) - 6} more lines)" if len(lines) > 6 else "")


# ------------------------------------------------------------------------------------------------ report
def board_rows(submission: Submission) -> list[str]:
    """The method's rows in the board's headline tables (markdown), per tier and track."""
    from tabulate import tabulate

    records, _ = load_records(DEFAULT_RESULTS)
    records = [r for r in records if r["suite"] in submission.cell_ids]
    if not records:
        return []
    out, heading, paragraph = [], "", ""
    for kind, payload in headline_blocks(_rows(records)):
        if kind == "h3":
            heading = payload
        elif kind == "p":
            paragraph = payload
        else:
            headers, rows = payload
            mine = [row for row in rows if any(_names(str(cell), submission.plugin_id) for cell in row[:2])]  # (rank,) name
            if mine:
                out += [f"**{heading}** — {paragraph}", "", tabulate(mine, headers=headers, tablefmt="github",
                                                                   disable_numparse=True), ""]
    return out


def _names(label: str, plugin_id: str) -> bool:
    """Whether a headline row's first cell (``[id](../attacks/id.py) *(note)*`` or ``id``) names the method."""
    return label == plugin_id or label.startswith((f"[{plugin_id}]", f"{plugin_id} "))


def changed_outputs() -> list[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "leaderboard"],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=False).stdout
    return [line[3:] for line in out.splitlines() if line.strip()]


def report(submission: Submission) -> str:
    """What to paste into the pull request."""

    device = device_info(resolve_device("auto"))
    code = code_version()
    lines = [f"### Submission: {submission.kind} `{submission.plugin_id}` ({submission.module.replace('.', '/')}.py)", "",
             f"`python -m benchmark submit {submission.plugin_id}` at commit `{code['commit'][:10]}`, suites "
             f"{', '.join(submission.suites)}, {'in the sandbox' if sandboxed() else 'WITHOUT the sandbox'}, on "
             f"{device.get('cpu') or device.get('name') or device.get('type')}.", "",
             "| step | seconds | outcome |", "|---|---|---|"]
    lines += [f"| {s.name} | {s.seconds:.0f} | {'ok' if s.ok else 'FAILED'}: {s.summary} |" for s in submission.steps]
    lines += [""] + (board_rows(submission) or ["(no row of the method on the board yet)", ""])
    if submission.verify_table:
        lines += ["verify:", "", "```", submission.verify_table, "```", ""]
    files = changed_outputs()
    if files:
        lines += [f"Files to commit ({len(files)}): " + ", ".join(files[:12]) + (" …" if len(files) > 12 else ""), ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class CliSteps:
    """The CLI's own steps a submission runs, handed in by ``benchmark.__main__`` (this module never imports
    the CLI): whether the device is usable, the sandbox set-up for a suite, the board writer and
    ``leaderboard --check`` (its exit code)."""

    device_ok: Callable[[str], bool]
    prepare_sandbox: Callable[[argparse.Namespace, Any], bool]
    write_board: Callable[[Path, Path, Path], Path]
    check: Callable[[], int]


def submit(args: argparse.Namespace, cli: CliSteps) -> int:
    """The whole submission; 0 when every step passed, 1 when one failed, 2 on a preflight problem."""
    if not cli.device_ok(args.device):
        return 2
    submission, suites = preflight(args)
    for suite in suites:
        cli.prepare_sandbox(args, suite)
        print(f"{suite.name}: {len(submission.cell_ids[suite.name])} cells with {submission.only}", flush=True)
        if not timed(submission, f"run {suite.name}", lambda suite=suite: run_step(args, submission, suite)):
            break
    else:
        steps = (("board", lambda: board_step(cli)), ("verify", lambda: verify_step(args, submission)),
                 ("check", lambda: check_step(cli)))
        for name, work in steps:
            if not timed(submission, name, work):
                break
    print("\n----- paste into the pull request -----\n")
    print(report(submission))
    return 0 if all(s.ok for s in submission.steps) else 1
