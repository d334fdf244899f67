"""Command line: ``python -m benchmark {run,plan,list,leaderboard}``.

    python -m benchmark run [--suite smoke|cpu|full|PATH] [--results-dir DIR] [--set key=value ...]
    python -m benchmark plan [--suite ...]            # the cells and the artifacts they share; no compute
    python -m benchmark plan --suite full --estimate  # device-hours per track and kind of work (--calibrate)
    python -m benchmark list [attacks|defenses|datasets|encoders|suites]
    python -m benchmark verify [--suite ...] [--sample N] [--only attack=ID]   # re-compute committed cells
    python -m benchmark leaderboard [--check]         # board, page and figures; --check: fresh and current
    python -m benchmark plot                          # figures under leaderboard/plots/
    python -m benchmark submit ID                     # a new method's cells, board, verify, check, PR text

Heavy modules (torch) are imported only by the commands that compute, so ``leaderboard --check`` is fast.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from benchmark.results import DEFAULT_RESULTS

DEFAULT_CACHE = Path(os.environ.get("POISONBENCH_CACHE", ".poisonbench-cache"))


EPILOGS = {
    "run": "By default the records go to leaderboard/results/ (the committed ones: finished cells are kept, --stale "
           "recomputes those the code no longer matches) and the committed board is re-rendered; use --results-dir "
           "and --board for a scratch run.\nexamples:\n  python -m benchmark run                      # the smoke suite\n"
           "  python -m benchmark run --suite cpu --only attack=gc --sandbox required\n"
           "  python -m benchmark run --results-dir /tmp/r --board /tmp/r/README.md --compare leaderboard/results",
    "plan": "examples:\n  python -m benchmark plan --suite cpu\n  python -m benchmark plan --suite smoke --cells --only attack=gc\n"
            "  python -m benchmark plan --suite full --estimate --gpus 1,8",
    "verify": "examples:\n  python -m benchmark verify --suite smoke --sample 20\n"
              "  python -m benchmark verify --suite smoke --only attack=my_attack",
    "submit": "Steps (each timed; the first failure stops): preflight (id registered, suites have its cells, tree "
              "committed, sandbox), run its cells into leaderboard/results/, render board, page and figures, verify "
              "the new records from an empty cache, leaderboard --check; then the pull-request text.\nexamples:\n"
              "  python -m benchmark submit my_attack\n  python -m benchmark submit my_defense --suite smoke --suite cpu\n"
              "  make submit ID=my_attack",
    "leaderboard": "examples:\n  python -m benchmark leaderboard            # README.md and index.html from the records\n"
                   "  python -m benchmark leaderboard --check --base main",
}


def _add_sandbox_option(parser: argparse.ArgumentParser, help_: str) -> None:
    from benchmark.sandbox import MODES

    parser.add_argument("--sandbox", choices=MODES, default=os.environ.get("POISONBENCH_SANDBOX", "auto"), help=help_)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, and every option's default shown (an option without one says nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description="PoisonBench: poisoning attacks and defenses on SSL encoders")
    sub = parser.add_subparsers(dest="command", required=True)
    formatter = HelpFormatter
    for name, help_ in (("run", "compute every unfinished cell of a suite"), ("plan", "list a suite's cells without computing"),
                        ("verify", "re-compute a sample of committed cells from an empty cache and compare every metric")):
        p = sub.add_parser(name, help=help_, description=help_, epilog=EPILOGS[name], formatter_class=formatter)
        p.add_argument("--suite", default="smoke", help="built-in suite name or a YAML path")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="dotted override, value parsed as YAML (repeatable), e.g. --set seeds=[0]")
        p.add_argument("--data-root", default=None, help="where torchvision data sets live (sets data.root)")
        p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, help="where records are read and written (the "
                                                                                 "committed ones by default)")
        p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="the artifact cache (encoders, features, "
                                                                             "poisons; $POISONBENCH_CACHE)")
        p.add_argument("--plugins", default=None, metavar="MODULE[,MODULE]",
                       help="extra plugin modules to load beside attacks/ and defenses/ (an out-of-tree submission)")
    for name in ("run", "verify"):
        _add_sandbox_option(sub.choices[name], "run plugin calls in the bubblewrap sandbox (benchmark/sandbox.py): "
                            "auto (the default, or $POISONBENCH_SANDBOX) uses it where the machine can and warns where "
                            "it cannot; required stops instead (what the committed boards are computed with); off")
        sub.choices[name].add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 …")
        sub.choices[name].add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                                       help="only the cells matching (repeatable): attack=ID, defense=ID, track=, scenario=, "
                                            "method=, seed=")
    plan = sub.choices["plan"]
    plan.add_argument("--cells", action="store_true", help="list every cell (by shared encoder) and every skipped combination")
    plan.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                      help="only the cells matching (repeatable; as for run)")
    plan.add_argument("--estimate", action="store_true",
                      help="device-hours per track and per kind of work, total on 1 and N devices (benchmark/estimate.py)")
    plan.add_argument("--profile", default=None, metavar="NAME",
                      help="device profile of benchmark/device_profiles.yaml (default: the suite's budget.profile)")
    plan.add_argument("--calibrate", action="store_true",
                      help="measure the profile on this machine (a timed SSL epoch per method/backbone) instead")
    plan.add_argument("--device", default="auto", help="with --calibrate: auto, cpu, cuda, cuda:1 …")
    plan.add_argument("--gpus", default="1,8", metavar="N[,N]", help="device counts to give the wall time for")
    verify = sub.choices["verify"]
    verify.add_argument("--sample", type=int, default=None, metavar="N", help="verify N randomly chosen cells (seeded)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the sample")
    verify.add_argument("--tolerance", type=float, default=None,
                        help="largest allowed |difference| of a metric (default: 0 on a CPU, 0.01 on a GPU)")
    run = sub.choices["run"]
    run.add_argument("--executor", choices=("local", "ray"), default="local")
    run.add_argument("--ray-address", default=None, metavar="ADDRESS",
                     help="with --executor ray: an existing cluster (e.g. auto or ray://head:10001); default: a local one")
    run.add_argument("--no-leaderboard", action="store_true", help="do not re-render leaderboard/README.md")
    run.add_argument("--board", type=Path, default=None, metavar="FILE", help="render the board of --results-dir to FILE")
    run.add_argument("--tracks", default=None, metavar="TRACK[,TRACK]",
                     help="compute only the cells of these tracks (default: every track of the suite)")
    run.add_argument("--stale", action="store_true",
                     help="also recompute cells whose record no longer matches the code (edited sources, dirty tree)")
    run.add_argument("--compare", type=Path, default=None, metavar="DIR",
                     help="afterwards, compare every record of this suite with the committed ones under DIR")
    from benchmark.provenance import VERIFY_SECONDS

    submit = sub.add_parser("submit", help="compute a new method's cells, render the board, verify, check; print the PR text",
                            description="compute a new method's cells, render the board, verify, check; print the PR text",
                            epilog=EPILOGS["submit"], formatter_class=formatter)
    submit.add_argument("id", help="the attack's or defense's registry id")
    submit.add_argument("--kind", choices=("attack", "defense"), default=None, help="needed only when the id is both")
    submit.add_argument("--suite", dest="suites", action="append", default=None, metavar="SUITE",
                        help="built-in suite(s) whose cells of the method to compute (repeatable; default: smoke)")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=argparse.SUPPRESS)
    submit.add_argument("--data-root", default=None, help="where torchvision data sets live (sets data.root)")
    submit.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="the artifact cache")
    submit.add_argument("--plugins", default=None, metavar="MODULE[,MODULE]", help="an out-of-tree plugin module")
    submit.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 …")
    submit.add_argument("--verify-seconds", type=float, default=VERIFY_SECONDS, metavar="S",
                        help="recorded compute of the new records to re-compute (a seeded sample beyond it)")
    submit.add_argument("--sandbox", choices=("required", "auto", "off"), default="required",
                        help="committed records must come from the sandbox: required (the default) stops where it is missing")
    submit.set_defaults(results_dir=DEFAULT_RESULTS)
    lst = sub.add_parser("list", help="list registered attacks, defenses, datasets, encoders or suites")
    lst.add_argument("what", nargs="?", default="all", choices=("all", "attacks", "defenses", "datasets", "encoders", "suites"))
    lst.add_argument("--no-settings", dest="settings", action="store_false", help="omit each method's default settings")
    lst.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the listing is kept between calls")
    board = sub.add_parser("leaderboard", help="render the board, its page and its figures from result JSON",
                           description="render leaderboard/README.md, index.html and the figures under plots/ from "
                                       "result JSON, or check them",
                           epilog=EPILOGS["leaderboard"], formatter_class=formatter)
    board.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    board.add_argument("--output", type=Path, default=Path("leaderboard/README.md"))
    board.add_argument("--site", type=Path, default=Path("leaderboard/index.html"), help="the HTML page of the same board")
    board.add_argument("--screenshot", action="store_true",
                       help="also write plots/screenshot-index.png of the page (headless Chromium)")
    board.add_argument("--check", action="store_true",
                       help="exit 1 if README.md, the page or a figure differs from what the results give, or a result is stale")
    board.add_argument("--base", default=None, metavar="REF",
                       help="with --check: also re-compute the records added or modified since REF (e.g. main), "
                            "within --verify-seconds, and fail on any that does not reproduce")
    board.add_argument("--verify-seconds", type=float, default=None, metavar="S",
                       help="with --base: the recorded compute time to re-compute (default 300; a seeded sample beyond it)")
    _add_sandbox_option(board, "with --base: the sandbox of the re-computation (as for run)")
    examples = sub.add_parser("examples", help="a figure of clean vs poisoned images per attack of a suite (runs the attacks)")
    examples.add_argument("--suite", default="smoke", help="built-in suite name or a YAML path (default: smoke)")
    examples.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    examples.add_argument("--data-root", default=None)
    examples.add_argument("--plugins", default=None, metavar="MODULE[,MODULE]")
    examples.add_argument("--output", type=Path, default=None, help="default: leaderboard/plots/examples-<suite>.png")
    plot = sub.add_parser("plot", help="draw figures (drop vs budget, per-SSL-method bars, defense cost) from result JSON")
    plot.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS)
    plot.add_argument("--output-dir", type=Path, default=Path("leaderboard/plots"))
    return parser


def _use_plugins(extra: str | None) -> None:
    """Load the out-of-tree plugin modules of ``--plugins`` beside the shipped ones."""
    from benchmark.plugins import EXTRA_PLUGINS_ENV

    if extra:
        modules = [m for m in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") + extra.split(",") if m.strip()]
        os.environ[EXTRA_PLUGINS_ENV] = ",".join(dict.fromkeys(m.strip() for m in modules))


def _load(args: argparse.Namespace):
    from benchmark.suite import load_suite

    _use_plugins(args.plugins)
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    return load_suite(args.suite, overrides)


def cmd_plan(args: argparse.Namespace) -> int:
    from benchmark.runner import encoder_groups, pending_cells, select_cells
    from benchmark.suite import expand_cells

    suite = _load(args)
    if args.estimate:
        return _estimate(args, suite)
    cells, skipped = expand_cells(suite)
    if args.only:
        cells = select_cells(cells, args.only)
    todo, done = pending_cells(cells, suite, args.results_dir)
    groups = encoder_groups(cells)
    print(f"suite {suite.name} (tier {suite.tier}): {len(cells)} cells, {len(done)} finished, {len(todo)} to compute; "
          f"{len(groups)} shared encoders")
    done_ids = {c.id for c in done}
    for track, n in sorted(Counter(c.track for c in cells).items()):
        of_track = [c for c in cells if c.track == track]
        attacks = ", ".join(dict.fromkeys(c.attack.name for c in of_track))
        defenses = ", ".join(dict.fromkeys(c.defense.name for c in of_track))
        print(f"  {track}: {n} cells ({sum(c.id in done_ids for c in of_track)} finished)\n    attacks: {attacks}\n"
              f"    defenses: {defenses}")
    if not args.cells:
        reasons = Counter(s.reason.split(" — ")[0] for s in skipped)
        if skipped:
            print(f"skipped combinations: {len(skipped)}")
            for reason, n in reasons.most_common(6):
                print(f"  {n}× {reason}")
            if len(reasons) > 6:
                print(f"  … {len(reasons) - 6} more reason(s)")
        print("every cell by shared encoder, and each skipped combination: --cells; device-hours: --estimate")
        return 0
    for group in groups:
        s = group[0].spec
        print(f"\nshared encoder {s['encoder']['method']}/{s['encoder']['backbone']} pre-trained on "
              f"{s['scenario']['pretrain']} (seed {s['seed']}, {s['encoder']['epochs']} epochs), track {group[0].track}: "
              f"{len(group)} cells")
        for cell in group:
            print(f"  [{'done' if cell.id in done_ids else 'todo'}] {cell.id}")
    if skipped:
        print("\nskipped combinations:")
        for s in skipped:
            print(f"  {s.track}: {s.what}: {s.reason}")
    return 0


def _estimate(args: argparse.Namespace, suite) -> int:
    from benchmark.estimate import calibrate, compute_problems, estimate, load_profiles, render

    compute = suite.spec.compute
    profiles = load_profiles()
    if args.calibrate:
        if not _device_ok(args.device):
            return 2
        profile = calibrate(suite, args.device)
    else:
        name = args.profile or (compute.profile if compute else None) or next(iter(profiles))
        if name not in profiles:
            print(f"unknown device profile {name!r}; valid: {', '.join(sorted(profiles))}", file=sys.stderr)
            return 2
        profile = profiles[name]
    try:
        gpus = [int(n) for n in args.gpus.split(",")]
    except ValueError:
        print(f"--gpus: expected comma-separated integers, got {args.gpus!r}", file=sys.stderr)
        return 2
    result = estimate(suite, profile)
    print(render(result, suite, gpus))
    if compute:
        print(f"  compute limit: {compute.device_hours:,.1f} device-hours on {compute.profile}")
        if profile.name == compute.profile:
            for problem in compute_problems(result, compute.device_hours):
                print(f"  OVER THE COMPUTE LIMIT: {problem}", file=sys.stderr)
                return 1
    return 0


def device_problem(name: str) -> str | None:
    """Why ``--device name`` cannot run here (None: it can), said before any compute starts."""
    import torch

    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"--device {name!r} is not a device name: use auto, cpu, cuda or cuda:N"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {name}: this machine has no CUDA GPU (torch {torch.__version__}); use --device cpu or auto"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0 … cuda:{torch.cuda.device_count() - 1})"
    elif device.type != "cpu":
        return f"--device {name}: only cpu and cuda devices are supported"
    return None


def _device_ok(name: str) -> bool:
    problem = device_problem(name)
    if problem:
        print(problem, file=sys.stderr)
    return problem is None


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: the run unwinds, so the plugin process of the call in flight is killed with it
    (the default action would end this process alone and leave that child running)."""
    raise KeyboardInterrupt


def _sandbox(args: argparse.Namespace, suite, *extra: Path) -> bool:
    """Configure the plugin sandbox for ``args.sandbox``, hiding the results, the cache, the data root, the
    embedded data sets and the suite's own data files from plugin processes."""
    from benchmark.data import dataset_path
    from benchmark.workers import configure_sandbox

    data_root = suite.spec.data.root if suite.spec.data else None
    hidden = _always_hidden(args.results_dir, args.cache_dir, Path(data_root).expanduser() if data_root else None)
    for scenario in suite.spec.scenarios:
        hidden += [p for p in (dataset_path(scenario.pretrain), dataset_path(scenario.downstream)) if p is not None]
    return configure_sandbox(args.sandbox, hidden + list(extra))


def _always_hidden(results_dir: Path, cache_dir: Path, data_root: Path | None = None) -> list[Path]:
    """What no plugin process may see whatever the suite: the results, the cache, the data root (the
    default one unless given) and the embedded data sets' package files."""
    from benchmark.data import default_data_root, embedded_data_dirs

    return [results_dir, cache_dir, data_root or default_data_root(), *embedded_data_dirs()]


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.runner import run_suite

    if not _device_ok(args.device):
        return 2
    suite = _load(args)
    _sandbox(args, suite)
    tracks = args.tracks.split(",") if args.tracks else None
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops as cleanly as Ctrl-C
    try:
        summary = run_suite(suite, results_dir=args.results_dir, cache_dir=args.cache_dir, device=args.device,
                            executor=args.executor, tracks=tracks, only=args.only, stale=args.stale,
                            ray_address=args.ray_address)
    except KeyboardInterrupt:
        print("\ninterrupted: finished cells are saved; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    from benchmark.workers import STATS

    statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary.by_status.items())) or "nothing new"
    print(f"suite {suite.name}: computed {len(summary.computed)} cells ({statuses}), {len(summary.skipped)} already finished, "
          f"{summary.seconds:.1f} s")
    from benchmark.workers import sandboxed

    print(f"plugin isolation: {STATS.calls} plugin calls{' in the sandbox' if sandboxed() else ' (no sandbox)'}, "
          f"{STATS.seconds:.1f} s in all, {STATS.overhead_seconds:.1f} s of it process and transfer overhead")
    if args.board is not None:
        from leaderboard.render import write_leaderboard

        print(f"board written to {write_leaderboard(args.results_dir, args.board)}")
    elif not args.no_leaderboard and args.results_dir.resolve() == DEFAULT_RESULTS.resolve():
        readme = Path("leaderboard/README.md")
        print(f"leaderboard written to {write_board(args.results_dir, readme, readme.parent / 'index.html')}")
    elif not args.no_leaderboard:  # never overwrite the board with other results
        print(f"render these results with: python -m benchmark leaderboard --results-dir {args.results_dir} --output FILE")
    code = 1 if summary.by_status.get("error") else 0
    if args.compare is not None:
        code = _compare(args, suite, summary) or code
    return code


def _compare(args: argparse.Namespace, suite, summary) -> int:
    from benchmark.utils import resolve_device
    from benchmark.verify import CROSS_CPU_TOLERANCE, compare_dirs, comparison_table, failed

    rows = compare_dirs(args.results_dir, args.compare, suite.name, summary.computed + summary.skipped, None,
                        resolve_device(args.device))
    counts = {s: sum(r.status == s for r in rows) for s in ("identical", "within tolerance", "differs", "no committed record")}
    print(f"compared with {args.compare}: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if counts["within tolerance"]:
        print(f"(records computed on another CPU model are compared within {CROSS_CPU_TOLERANCE:g}: float rounding "
              "differs between CPUs and SSL pre-training amplifies it; on the same CPU they are identical)")
    if failed(rows):
        print(comparison_table(failed(rows)))
        return 1
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from benchmark.verify import comparison_table, failed, verify_suite

    if not _device_ok(args.device):
        return 2
    suite = _load(args)
    _sandbox(args, suite)
    rows, tolerance = verify_suite(suite, committed_dir=args.results_dir, sample=args.sample, seed=args.seed,
                                   only=args.only, device=args.device, tolerance=args.tolerance)
    print(comparison_table(rows))
    bad = failed(rows)
    print(f"verify {suite.name}: {len(rows) - len(bad)} of {len(rows)} cells reproduce the committed metrics "
          f"(tolerance {tolerance:g}); {len(bad)} differ")
    return 1 if bad else 0


def cmd_examples(args: argparse.Namespace) -> int:
    from benchmark.examples import write_examples

    suite = _load(args)
    output = args.output or Path(f"leaderboard/plots/examples-{suite.name}.png")
    print(f"wrote {write_examples(suite, output)}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from benchmark.submit import CliSteps, SubmitError, submit

    _use_plugins(args.plugins)
    args.suites = args.suites or ["smoke"]
    if args.data_root:
        args.overrides.append(f"data.root={args.data_root}")
    try:
        return submit(args, CliSteps(device_ok=_device_ok, prepare_sandbox=_sandbox, write_board=write_board,
                                     check=lambda: cmd_leaderboard(build_parser().parse_args(["leaderboard", "--check"]))))
    except SubmitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def plugin_listing(cache_dir: Path) -> dict[str, Any]:
    """Every registered attack and defense with its description and default settings (each module's own
    plugin process says them); kept under the cache, keyed by every source file, so a second ``list``
    answers at once. Extra plugin modules (``--plugins``) are always described afresh."""
    import hashlib

    from benchmark.plugins import EXTRA_PLUGINS_ENV, catalogue, resolve
    from benchmark.provenance import REPO_ROOT

    digest = hashlib.sha256()
    for path in sorted(p for folder in ("benchmark", "attacks", "defenses") for p in (REPO_ROOT / folder).rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    stored = Path(cache_dir) / "listing" / f"{digest.hexdigest()[:24]}.json"
    extra = os.environ.get(EXTRA_PLUGINS_ENV, "").strip(", ")
    if not extra and stored.is_file():
        return json.loads(stored.read_text())
    plugins = catalogue()
    entries = [(kind, info.id, {}, f"{kind} {info.id}") for kind in ("attack", "defense") for info in plugins.of(kind).values()]
    resolutions, _ = resolve(entries, [])
    listing: dict[str, Any] = {"problems": list(plugins.problems), "attack": {}, "defense": {}}
    for (kind, plugin_id, _, _), resolution in zip(entries, resolutions):
        info = plugins.get(kind, plugin_id)
        listing[kind][plugin_id] = {"tracks": list(info.tracks), "citation": info.citation, "stage": info.stage,
                                    "space": info.space, "defaults": resolution.config or {}}
    if not extra:
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps(listing, sort_keys=True))
    return listing


def _settings_text(defaults: dict[str, Any], width: int = 100) -> list[str]:
    """``name=value`` pairs of the default settings, wrapped."""
    import textwrap

    pairs = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(defaults.items())) or "(none)"
    return textwrap.wrap(f"defaults: {pairs}", width=width, initial_indent=" " * 4, subsequent_indent=" " * 14)


def cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if what in ("all", "attacks", "defenses"):
        listing = plugin_listing(args.cache_dir)
        for problem in listing["problems"]:
            print(f"warning: {problem}", file=sys.stderr)
        for kind in ("attack", "defense"):
            if what not in ("all", f"{kind}s"):
                continue
            print(f"{kind}s:")
            for name, info in listing[kind].items():
                where = f"stage: {info['stage']}; " if kind == "defense" else (
                    f"space: {info['space']}; " if info.get("space") not in (None, "input") else "")
                print(f"  {name:22s} {where}tracks: {', '.join(info['tracks'])}; {info['citation']}")
                if args.settings:
                    print("\n".join(_settings_text(info["defaults"])))
    if what in ("all", "datasets"):
        from benchmark.data import dataset_names

        print("datasets:", ", ".join(dataset_names()), "(and npz:PATH, folder:PATH)")
    if what in ("all", "encoders"):
        from benchmark.backbones import backbone_names
        from benchmark.ssl import ssl_method_names

        print("encoders: SSL methods", ", ".join(ssl_method_names()), "× backbones", ", ".join(backbone_names()), "or any timm model name")
    if what in ("all", "suites"):
        from benchmark.suite import suite_names

        print("suites:", ", ".join(suite_names()))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from leaderboard.render import freshness_report, render_leaderboard
    from leaderboard.site import render_site

    plots_dir = args.output.parent / "plots"
    if not args.check:
        print(f"leaderboard written to {write_board(args.results_dir, args.output, args.site)}")
        if args.screenshot:
            import shutil

            from leaderboard.site import screenshot

            if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
                print("--screenshot needs headless Chromium and its driver: apt-get install chromium chromium-driver "
                      "(the board itself is written)", file=sys.stderr)
                return 2
            print(f"screenshot written to {screenshot(args.site, plots_dir / 'screenshot-index.png')}")
        return 0
    committed = args.results_dir.resolve() == DEFAULT_RESULTS.resolve()
    stale, waiting_by_suite = freshness_report(args.results_dir, committed=committed)
    text, problems = render_leaderboard(args.results_dir, waiting=waiting_by_suite if committed else None)
    for p in problems:
        print(f"invalid result: {p}", file=sys.stderr)
    outdated = [path for path, fresh in ((args.output, text), (args.site, render_site(args.results_dir, plots_dir)))
                if (path.read_text() if path.exists() else "") != fresh]
    outdated += _outdated_plots(args.results_dir, plots_dir)
    for path in outdated:
        print(f"{path} is out of date: run `python -m benchmark leaderboard` (it writes the board, the page and the figures)",
              file=sys.stderr)
    if stale:
        print(stale, file=sys.stderr)
    for suite, waiting in waiting_by_suite.items():
        print(f"suite {suite}: {waiting} record(s) await the recompute named in leaderboard/recompute.yaml", file=sys.stderr)
    missing = _missing_cells(args.results_dir) if committed else []
    for line in missing:
        print(line, file=sys.stderr)
    differ = _verify_changed(args) if args.base else 0
    if outdated or problems or stale or differ or missing:
        return 1
    print(f"{args.output}, {args.site} and the figures are up to date, and every result matches the code in this tree")
    return 0


def _missing_cells(results_dir: Path) -> list[str]:
    """For every built-in suite with committed records: the cells it defines that have none (a suite entry
    added without running it), named with the command that computes them, and the records that belong to
    no cell of it (a suite entry changed or removed: they would stay on the board, describing settings the
    suite no longer runs)."""
    from benchmark.suite import expand_cells, load_suite, suite_names

    lines = []
    for name in suite_names():
        folder = Path(results_dir) / name
        if not folder.is_dir():
            continue
        have = {p.stem for p in folder.glob("*.json")}
        cells, _ = expand_cells(load_suite(name, []))
        ids = {c.id for c in cells}
        absent = [c.id for c in cells if c.id not in have]
        if absent:
            lines.append(f"suite {name}: {len(absent)} cell(s) have no record: " + ", ".join(absent[:5])
                         + (f" … (+{len(absent) - 5})" if len(absent) > 5 else "")
                         + f"; compute them with python -m benchmark run --suite {name} --sandbox required")
        extra = sorted(have - ids)
        if extra:
            lines.append(f"suite {name}: {len(extra)} record(s) belong to no cell of the suite (an entry's settings "
                         "changed or it was removed): " + ", ".join(extra[:5])
                         + (f" … (+{len(extra) - 5})" if len(extra) > 5 else "")
                         + f"; delete them (git rm {folder}/<cell>.json)")
    return lines


def _verify_changed(args: argparse.Namespace) -> int:
    """Re-compute the records changed since ``args.base`` (within the time limit); how many differ."""
    import subprocess

    from benchmark.provenance import VERIFY_SECONDS
    from benchmark.verify import changed_records, choose_within, comparison_table, failed, verify_records

    try:
        paths = changed_records(args.results_dir, args.base)
    except (subprocess.CalledProcessError, IndexError, ValueError) as exc:  # no such ref, a shallow clone
        print(f"warning: cannot tell which results changed since {args.base} ({exc}); nothing re-computed",
              file=sys.stderr)
        return 0
    records = [json.loads(p.read_text()) for p in paths]
    records = [r for r in records if isinstance(r, dict) and r.get("status") == "ok"]
    if not records:
        print(f"no result changed since {args.base}: nothing to re-compute")
        return 0
    budget = VERIFY_SECONDS if args.verify_seconds is None else args.verify_seconds
    chosen = choose_within(records, budget)
    print(f"re-computing {len(chosen)} of the {len(records)} result(s) changed since {args.base} "
          f"(recorded compute {budget:g} s at most)")
    from benchmark.workers import configure_sandbox

    configure_sandbox(args.sandbox, _always_hidden(args.results_dir, DEFAULT_CACHE))
    rows = verify_records(chosen, device="cpu")
    bad = failed(rows)
    print(comparison_table(rows))
    print(f"{len(rows) - len(bad)} of {len(rows)} re-computed results reproduce; {len(bad)} differ", file=sys.stderr if bad else sys.stdout)
    return len(bad)


def write_board(results_dir: Path, readme: Path, site: Path) -> Path:
    """The figures, then README.md and the HTML page (which list the figures), from the same result files."""
    from leaderboard.plots import write_plots
    from leaderboard.render import write_leaderboard
    from leaderboard.site import write_site

    plots = readme.parent / "plots"
    written = {p.name for p in write_plots(results_dir, plots)}
    for figure in plots.glob("*.png"):  # a figure the results no longer make
        if figure.name not in written and not figure.name.startswith(NOT_FROM_RESULTS):
            figure.unlink()
    write_site(results_dir, plots, site)
    return write_leaderboard(results_dir, readme)


NOT_FROM_RESULTS = ("screenshot", "examples")  # figures made by running code or a browser, not from result files


def _outdated_plots(results_dir: Path, plots_dir: Path) -> list[Path]:
    """Committed figures whose regenerated bytes differ (or that are missing or no longer made)."""
    import tempfile

    from leaderboard.plots import write_plots

    with tempfile.TemporaryDirectory() as scratch:
        fresh = {p.name: p.read_bytes() for p in write_plots(results_dir, Path(scratch))}
    committed = {p.name: p.read_bytes() for p in plots_dir.glob("*.png") if not p.name.startswith(NOT_FROM_RESULTS)}
    return [plots_dir / name for name in sorted(set(fresh) | set(committed)) if fresh.get(name) != committed.get(name)]


def cmd_plot(args: argparse.Namespace) -> int:
    from leaderboard.plots import write_plots

    written = write_plots(args.results_dir, args.output_dir)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"no results to plot under {args.results_dir}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("leaderboard", "plot"):  # no torch on these paths
        return cmd_leaderboard(args) if args.command == "leaderboard" else cmd_plot(args)
    from benchmark.data import DatasetNotFoundError
    from benchmark.registry import UnknownNameError
    from benchmark.sandbox import SandboxUnavailable
    from benchmark.suite import SuiteError

    try:
        commands = {"run": cmd_run, "plan": cmd_plan, "list": cmd_list, "verify": cmd_verify, "examples": cmd_examples,
                    "submit": cmd_submit}
        return commands[args.command](args)
    except (SuiteError, UnknownNameError, DatasetNotFoundError, SandboxUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
