#!/usr/bin/env python3
"""Run noex_lab's benchmark workloads next to the pure-Python ceiling, in one invocation.

    python benchmarks/run.py [--workloads W1,...,W10] [--repeat N] [--deadline SECONDS]
                             [--backend asyncio|trio] [--loop asyncio|uvloop]
                             [--ceiling PATH | --no-ceiling] [--no-summary]

Each selected workload runs in a child process of its own (a fresh interpreter and event loop,
killed if it overruns its deadline); the remote ones (W3-W7) start their nodes as `noex-lab node`
OS processes from there. Then `../shared/bench/limit-asyncio/bench.py` (the shared folder beside
the repository) runs W1-W5 and W8 in its default variant and W3-W5 again with `--coalesce`
(variant "coalesced").
That is one round; `--repeat N` (default 3) runs N rounds, alternating ours and the ceiling, and
reports the median of each. Every result is printed as one JSON line in the format of
`../shared/bench/WORKLOADS.md` (ours with "peer": "noex_lab"), followed by a summary table:
ours, the ceiling's best variant for that line, ours/ceiling, which direction is better, and the
target (W6/W7 have no ceiling: their absolute issue targets are checked instead).

`--loop uvloop` runs everything on uvloop: our workload processes (`anyio.run(...,
backend_options={"use_uvloop": True})`), every node process they start (`noex-lab node --loop
uvloop`, through NOEX_BENCH_NODE_LOOP) and the ceiling (`bench.py --loop uvloop`, peer
"limit-uvloop"); our lines then carry variant "uvloop". The option applies to every registered
workload, so a workload added later needs nothing of its own for it.

Exit status: 0 when every workload of ours produced a number, even if a target is missed
(misses are marked MISS in the summary); 1 when one of ours failed (its line has "value": null
and params.error). A missing or failing ceiling is reported but does not change the status.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import PEER, Context, Line, Workload, base_params, emit_line  # noqa: E402
from benchmarks.nodes import LOOP_ENV  # noqa: E402

# Workload id -> module defining `WORKLOAD` (remote workloads start their nodes as
# `noex-lab node` OS processes from inside `run`).
REGISTRY: dict[str, str] = {
    "W1": "benchmarks.workloads.w1_local_call",
    "W2": "benchmarks.workloads.w2_local_cast",
    "W3": "benchmarks.workloads.w3_remote_call_latency",
    "W4": "benchmarks.workloads.w4_remote_call_throughput",
    "W5": "benchmarks.workloads.w5_remote_cast_throughput",
    "W6": "benchmarks.workloads.w6_cluster_formation",
    "W7": "benchmarks.workloads.w7_failure_detection",
    "W8": "benchmarks.workloads.w8_process_start",
    "W9": "benchmarks.workloads.w9_failover_at_scale",
    "W10": "benchmarks.workloads.w10_mesh_scale",
    "SIM": "benchmarks.workloads.sim_speed",  # noex_lab's own (issue 15), not in WORKLOADS.md
}
KNOWN_IDS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "W10", "SIM")  # WORKLOADS.md, and SIM
CEILING_IDS = ("W1", "W2", "W3", "W4", "W5", "W8")  # what limit-asyncio/bench.py measures
# The ceiling's variants: (variant, extra arguments, the ids it measures). Ratios use the best
# variant of each line (highest rate, lowest latency), both measured in the same run.
CEILING_VARIANTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("default", (), CEILING_IDS),
    ("coalesced", ("--coalesce",), ("W3", "W4", "W5")),
)
CEILING_PEERS = {"asyncio": "limit-asyncio", "uvloop": "limit-uvloop"}  # bench.py's peer per --loop
UVLOOP_SPEED_RATIO = 0.7  # issue 19: on uvloop each of W1-W5 and W8 >= 0.7 x the ceiling's --loop uvloop
CEILING_PEER = CEILING_PEERS["asyncio"]
DEFAULT_CEILING = REPO.parent / "shared" / "bench" / "limit-asyncio" / "bench.py"
DEFAULT_DEADLINE_S = float(os.environ.get("BENCH_WORKLOAD_DEADLINE_S", "120"))
DEFAULT_REPEAT = 3
GRACE_S = 15.0  # interpreter start-up and shutdown on top of a child's deadline


def load(workload_id: str) -> Workload:
    module = importlib.import_module(REGISTRY[workload_id])
    workload: Workload = module.WORKLOAD
    if workload.id != workload_id:
        raise RuntimeError(f"{REGISTRY[workload_id]} defines {workload.id}, registered as {workload_id}")
    return workload


def note(text: str) -> None:
    """Human-readable progress and warnings go to stderr; stdout carries JSON lines and the summary."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- child side
def backend_options(backend: str, loop: str) -> dict[str, Any] | None:
    """anyio.run's options for `--loop`: uvloop under the asyncio backend, else none."""
    return {"use_uvloop": True} if backend == "asyncio" and loop == "uvloop" else None


def child_main(workload_id: str, backend: str, deadline_s: float, loop: str = "asyncio") -> int:
    """Run one workload in this process and print its JSON lines."""
    import anyio

    workload = load(workload_id)
    ctx = Context(backend=backend, deadline_s=deadline_s, base_params=base_params(backend, loop))
    # the node processes this workload starts run the same loop (benchmarks/nodes.py reads it)
    os.environ[LOOP_ENV] = loop if backend == "asyncio" else "asyncio"

    async def guarded() -> list[Any]:
        with anyio.fail_after(deadline_s):
            return await workload.run(ctx)

    try:
        results = anyio.run(guarded, backend=backend, backend_options=backend_options(backend, loop))
    except TimeoutError:
        return _emit_failure(workload, ctx.base_params, f"deadline of {deadline_s:g} s exceeded")
    except Exception as exc:
        return _emit_failure(workload, ctx.base_params, f"{type(exc).__name__}: {exc}")
    reported = set()
    failed = False
    for m in results:
        emit_line(PEER, m.workload, m.value, m.unit, m.params)
        reported.add((m.workload, m.params.get("variant")))
        failed = failed or m.value is None
    missing = [line for line in workload.lines
               if (line.workload, line_variant(line, ctx.base_params)) not in reported]
    for line in missing:
        emit_line(PEER, line.workload, None, line.unit, line_params(line, ctx.base_params, "not reported"))
    return 1 if missing or failed else 0


def line_variant(line: Line, params: dict[str, Any]) -> Any:
    """The params.variant a line of ours carries: its own, else the run's."""
    return line.variant if line.variant is not None else params.get("variant")


def line_params(line: Line, params: dict[str, Any], error: str) -> dict[str, Any]:
    return {**params, "variant": line_variant(line, params), "error": error}


def _emit_failure(workload: Workload, params: dict[str, Any], error: str) -> int:
    for line in workload.lines:
        emit_line(PEER, line.workload, None, line.unit, line_params(line, params, error))
    return 1


# --------------------------------------------------------------------------- parent side
def parse_lines(text: str, source: str) -> list[dict[str, Any]]:
    """JSON result lines from a child's stdout; anything else is passed on to stderr."""
    records = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "workload" in record and "peer" in record:
            records.append(record)
        else:
            note(f"{source}: {line}")
    return records


def null_records(workload: Workload, params: dict[str, Any], error: str) -> list[dict[str, Any]]:
    return [
        {"peer": PEER, "workload": line.workload, "value": None, "unit": line.unit,
         "params": line_params(line, params, error)}
        for line in workload.lines
    ]


def run_ours(workload: Workload, backend: str, deadline_s: float, loop: str = "asyncio") -> list[dict[str, Any]]:
    """Run one workload in a child process with a hard deadline."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", workload.id,
           "--backend", backend, "--loop", loop, "--deadline", str(deadline_s)]
    params = base_params(backend, loop)
    note(f"running {workload.id} {workload.name} ({workload.description}) on {backend}"
         + (f" ({loop})" if backend == "asyncio" and loop != "asyncio" else ""))
    proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=deadline_s + GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()  # by PID: the child this function started
        out, _ = proc.communicate()
        parse_lines(out, workload.id)
        return null_records(workload, params, f"killed: no result within the {deadline_s:g} s deadline")
    records = parse_lines(out, workload.id)
    seen = {(r["workload"], r.get("params", {}).get("variant")) for r in records}
    for rec in null_records(workload, params, f"the workload process exited with status {proc.returncode}"):
        if (rec["workload"], rec["params"]["variant"]) not in seen:
            records.append(rec)
    return records


def run_ceiling(path: Path, ids: list[str], deadline_s: float,
                extra: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], str | None]:
    """Run limit-asyncio/bench.py for `ids` (plus `extra` arguments, e.g. `--coalesce`);
    returns its records and a problem, if any."""
    if not ids:
        return [], None
    if not path.is_file():
        return [], f"ceiling harness not found at {path} (expected ../shared beside the repository)"
    note(f"running the ceiling {path} --workloads {','.join(ids)} {' '.join(extra)}".rstrip())
    env = {**os.environ, "BENCH_WORKLOAD_DEADLINE_S": str(deadline_s)}
    cmd = [sys.executable, str(path), "--workloads", ",".join(ids), *extra]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, env=env)
    try:
        out, _ = proc.communicate(timeout=deadline_s * (len(ids) + 1) + GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()  # by PID: the child this function started
        out, _ = proc.communicate()
        return parse_lines(out, "ceiling"), "the ceiling harness overran its deadline and was killed"
    records = parse_lines(out, "ceiling")
    problem = None if proc.returncode == 0 else f"the ceiling harness exited with status {proc.returncode}"
    return records, problem


def combine(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One record per (peer, workload, variant) over several rounds: the median value.

    With one round the records are returned unchanged. Otherwise `params.runs` lists every
    round's value and `params.repeat` their number; if any round failed, the line is a failure
    (value null) carrying the first error.
    """
    if len(runs) == 1:
        return runs[0]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for records in runs:
        for rec in records:
            key = (rec["peer"], rec["workload"], str(rec.get("params", {}).get("variant")))
            groups.setdefault(key, []).append(rec)
    combined = []
    for recs in groups.values():
        values = [r.get("value") for r in recs]
        first = recs[0]
        params = {k: v for k, v in first.get("params", {}).items() if k != "error"}
        params.update(repeat=len(recs), runs=values)
        errors = [r["params"]["error"] for r in recs
                  if r.get("value") is None and "error" in r.get("params", {})]
        if None in values:
            params["error"] = errors[0] if errors else "a round produced no value"
            value = None
        else:
            value = round(statistics.median(values), 4)
        combined.append({"peer": first["peer"], "workload": first["workload"], "value": value,
                         "unit": first["unit"], "params": params})
    return combined


# --------------------------------------------------------------------------- summary
def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value:.4f}"
    return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"


def best_ceiling(ceiling: list[dict[str, Any]], line: Line, peer: str = CEILING_PEER) -> dict[str, Any] | None:
    """The ceiling's best record for `line` over its variants: highest rate / lowest latency."""
    candidates = [r for r in ceiling
                  if r.get("peer") == peer and r.get("workload") == line.workload
                  and r.get("value") is not None]
    if not candidates:
        return None
    pick = max if line.higher_is_better else min
    return pick(candidates, key=lambda r: float(r["value"]))


def find_ours(ours: list[dict[str, Any]], line: Line) -> dict[str, Any]:
    for rec in ours:
        if rec.get("workload") != line.workload:
            continue
        if line.variant is None or rec.get("params", {}).get("variant") == line.variant:
            return rec
    return {}


def ratio_target(line: Line, loop: str) -> float | None:
    """The bound ours/ceil must meet on `loop`: the line's own; on uvloop, for a speed, issue
    19's: UVLOOP_SPEED_RATIO of that ceiling's rate, and a latency at most the line's own bound
    and at most the inverse of that ratio."""
    target = line.target_ratio
    if target is None or loop != "uvloop" or not line.speed:
        return target
    return UVLOOP_SPEED_RATIO if line.higher_is_better else min(target, 1 / UVLOOP_SPEED_RATIO)


def summarize(workloads: list[Workload], ours: list[dict[str, Any]], ceiling: list[dict[str, Any]],
              ceiling_problem: str | None, ceiling_peer: str = CEILING_PEER, loop: str = "asyncio") -> list[str]:
    """The summary table, as lines of text; misses and errors are marked.

    `ours/ceil` is always ours divided by the ceiling's best variant measured in the same run;
    `better` says which direction is good for that line (rates: higher; latencies and
    durations: lower), and `target` is the bound ours/ceil must meet (or, for W6/W7, which
    have no ceiling, the absolute bound of the issue, in the line's unit).
    """
    header = ("workload", "variant", "unit", "better", "ours", "ceiling", "ceil.variant", "ours/ceil",
              "target", "status")
    rows: list[tuple[str, ...]] = []
    misses, errors = [], []
    for workload in workloads:
        for line in workload.lines:
            rec = find_ours(ours, line)
            value = rec.get("value")
            variant = str(rec.get("params", {}).get("variant", line.variant or "-"))
            crec = best_ceiling(ceiling, line, ceiling_peer) if workload.has_ceiling else None
            cvalue = crec.get("value") if crec is not None else None
            cvariant = str(crec.get("params", {}).get("variant", "?")) if crec is not None else "-"
            ratio = value / cvalue if value is not None and cvalue else None
            cmp = ">=" if line.higher_is_better else "<="
            ok: bool | None = None
            target_ratio = ratio_target(line, loop)
            if target_ratio is not None:
                target = f"ratio {cmp} {target_ratio:.2f}"
                if ratio is not None:
                    ok = ratio >= target_ratio if line.higher_is_better else ratio <= target_ratio
            elif line.abs_target is not None:
                target = f"{cmp} {line.abs_target:g} {line.unit} ({line.abs_note})" if line.abs_note else \
                    f"{cmp} {line.abs_target:g} {line.unit}"
                if value is not None:
                    ok = value >= line.abs_target if line.higher_is_better else value <= line.abs_target
            else:
                target = "-"
            if value is None:
                error = str(rec.get("params", {}).get("error", "no result"))
                status = "ERROR: " + (error if len(error) <= 120 else error[:117] + "...")
                errors.append(f"{line.workload}/{variant}")
            elif ok is None:
                status = "no ceiling" if workload.has_ceiling and ratio is None else "-"
            elif ok:
                status = "ok"
            else:
                status = "MISS  <-- " + ("below target" if line.higher_is_better else "above target")
                misses.append(f"{line.workload}/{variant}")
            rows.append((line.workload, variant, line.unit, "higher" if line.higher_is_better else "lower",
                         fmt(value), fmt(cvalue), cvariant, "-" if ratio is None else f"{ratio:.3f}",
                         target, status))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = {4, 5, 7}

    def row(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if i in numeric else c.ljust(w)
                 for i, (c, w) in enumerate(zip(cells[:-1], widths[:-1], strict=True))]
        return "  ".join([*parts, cells[-1]])

    lines = ["", f"Summary: {PEER} vs {ceiling_peer}, both measured in this run "
                 f"(medians of the rounds). ours/ceil = ours / the ceiling's best variant;",
             "`better` gives the good direction: rates higher (target ours/ceil >= x), latencies and "
             "durations lower (target ours/ceil <= x, or an absolute bound where there is no ceiling).",
             row(header), row(tuple("-" * w for w in widths))]
    lines += [row(r) for r in rows]
    if ceiling_problem:
        lines.append(f"NOTE: {ceiling_problem}; ratios need the ceiling")
    if misses:
        lines.append(f"TARGET MISSED: {', '.join(misses)}")
    if errors:
        lines.append(f"FAILED: {', '.join(errors)} (see params.error in the JSON lines)")
    if not misses and not errors and not ceiling_problem:
        lines.append("all targets met")
    return lines


# --------------------------------------------------------------------------- main
def select(spec: str | None) -> list[str]:
    if spec is None:
        return list(REGISTRY)
    wanted = [w.strip().upper() for w in spec.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in KNOWN_IDS]
    if unknown:
        raise SystemExit(f"unknown workload ids {unknown}; WORKLOADS.md defines {', '.join(KNOWN_IDS)}")
    return list(dict.fromkeys(wanted))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads",
                    help=f"comma-separated ids (default: all implemented: {','.join(REGISTRY)})")
    ap.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE_S,
                    help="seconds each workload may take (default %(default)s; "
                         "env BENCH_WORKLOAD_DEADLINE_S)")
    ap.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio",
                    help="anyio backend for our workloads (default asyncio; "
                         "trio is reported as variant 'trio')")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio",
                    help="event loop under the asyncio backend, for our workloads, their node processes "
                         "and the ceiling alike (default asyncio; uvloop lines carry variant 'uvloop')")
    ap.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                    help="rounds of ours + ceiling; each line reports the median (default %(default)s)")
    ap.add_argument("--ceiling", type=Path, default=DEFAULT_CEILING, help="path of limit-asyncio/bench.py")
    ap.add_argument("--no-ceiling", action="store_true", help="do not run the ceiling harness")
    ap.add_argument("--no-summary", action="store_true", help="print only the JSON lines")
    ap.add_argument("--child", metavar="ID", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.deadline <= 0:
        ap.error("--deadline must be > 0")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.loop == "uvloop" and args.backend != "asyncio":
        ap.error("--loop uvloop is an asyncio event loop: use it with --backend asyncio")
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        ap.error("--loop uvloop needs uvloop: pip install 'noex-lab[fast]'")

    if args.child:
        return child_main(args.child, args.backend, args.deadline, args.loop)

    ids = select(args.workloads)
    not_yet = [w for w in ids if w not in REGISTRY]
    if not_yet:
        note(f"not implemented yet in benchmarks/ (skipped for noex_lab): {', '.join(not_yet)}")
    workloads = [load(w) for w in ids if w in REGISTRY]

    ours_runs: list[list[dict[str, Any]]] = []
    ceiling_runs: list[list[dict[str, Any]]] = []
    problem: str | None = "the ceiling was not run (--no-ceiling)" if args.no_ceiling else None
    for run in range(1, args.repeat + 1):
        if args.repeat > 1:
            note(f"round {run} of {args.repeat}")
        # Ours and the ceiling alternate, so a change in machine load hits both sides.
        ours_runs.append([rec for w in workloads for rec in run_ours(w, args.backend, args.deadline, args.loop)])
        if not args.no_ceiling:
            round_records: list[dict[str, Any]] = []
            problem = None
            for _variant, extra, measured in CEILING_VARIANTS:
                ceiling_ids = [w for w in ids if w in measured]
                loop_args = ("--loop", args.loop) if args.loop != "asyncio" else ()
                records, variant_problem = run_ceiling(args.ceiling.resolve(), ceiling_ids, args.deadline,
                                                       (*extra, *loop_args))
                round_records += records
                if variant_problem:
                    problem = variant_problem
                    note(f"WARNING: {variant_problem}")
            ceiling_runs.append(round_records)

    ours = combine(ours_runs)
    ceiling = combine(ceiling_runs)
    for rec in [*ours, *ceiling]:
        print(json.dumps(rec), flush=True)

    if not args.no_summary:
        print("\n".join(summarize(workloads, ours, ceiling, problem, CEILING_PEERS[args.loop], args.loop)), flush=True)
    failed = any(r.get("value") is None for r in ours)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
