#!/usr/bin/env python3
"""Draw docs/performance.md's chart from the JSON lines of one or more `benchmarks/run.py` runs.

    python benchmarks/chart.py OUT.svg RUN.jsonl [RUN.jsonl ...]

Each RUN file is a run's stdout (`run.py ... > RUN.jsonl`; the summary lines are skipped). Ratios
are taken within one file, ours against the ceiling measured in that same run, as the summary
does. Left panel: every line with a ceiling as a fraction of the ceiling's performance (rates
ours / ceiling, latencies ceiling / ours: 1.0 is the ceiling, higher is better), one bar per run
(its variant: default, uvloop, trio), with the target marked. Right panel: the lines without a
ceiling against their absolute target (ours / target, lower is better, 1.0 is the target).
Needs matplotlib (`pip install 'noex-lab[docs]'`); the image is committed, so building the docs
does not need a benchmark run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import PEER, Line  # noqa: E402
from benchmarks.run import REGISTRY, best_ceiling, load  # noqa: E402


def read_run(path: Path) -> list[dict[str, Any]]:
    records = []
    for raw in path.read_text().splitlines():
        if raw.startswith("{"):
            record = json.loads(raw)
            if isinstance(record, dict) and "workload" in record:
                records.append(record)
    return records


def lines_by_workload() -> dict[tuple[str, str | None], tuple[Line, bool]]:
    """(workload field, the line's own variant or None) -> (its Line, whether it has a ceiling)."""
    known: dict[tuple[str, str | None], tuple[Line, bool]] = {}
    for workload_id in REGISTRY:
        workload = load(workload_id)
        for line in workload.lines:
            known.setdefault((line.workload, line.variant), (line, workload.has_ceiling))
    return known


def points(records: list[dict[str, Any]], known: dict[tuple[str, str | None], tuple[Line, bool]]
           ) -> tuple[str, dict[str, tuple[float, float | None]], dict[str, float]]:
    """(variant, {label: (fraction of ceiling, target fraction)}, {label: ours / absolute target})."""
    ours = [r for r in records if r.get("peer") == PEER and r.get("value") is not None]
    variant = str(ours[0]["params"].get("variant", "?")) if ours else "?"
    loop = str(ours[0]["params"].get("loop", "asyncio")) if ours else "asyncio"
    ceiling_peer = "limit-uvloop" if loop == "uvloop" else "limit-asyncio"
    ceiling = [r for r in records if r.get("peer") == ceiling_peer]
    vs_ceiling: dict[str, tuple[float, float | None]] = {}
    vs_target: dict[str, float] = {}
    for rec in ours:
        own = rec["params"].get("variant")
        line, has_ceiling = known.get((rec["workload"], own), known.get((rec["workload"], None), (None, False)))
        if line is None or (has_ceiling and own != variant):
            continue  # a supplementary variant (e.g. W5 with-3x16MiB): only the run's own is drawn
        value = float(rec["value"])
        name = rec["workload"].replace("-remote-call-latency-", " ").replace("-remote-", " ").replace("-", " ", 1)
        if has_ceiling:
            crec = best_ceiling(ceiling, line, ceiling_peer)
            if crec is None or not value:
                continue
            cvalue = float(crec["value"])
            fraction = value / cvalue if line.higher_is_better else cvalue / value
            target = line.target_ratio
            if target is not None and not line.higher_is_better:
                target = 1 / target
            vs_ceiling[name] = (fraction, target)
        elif line.abs_target is not None and line.abs_target > 0:
            label = f"{name} ({rec['params'].get('variant', '')})"
            vs_target[label] = value / line.abs_target
    return variant, vs_ceiling, vs_target


def draw(out: Path, runs: list[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    known = lines_by_workload()
    series = [points(read_run(path), known) for path in runs]
    labels = list(dict.fromkeys(label for _, vs, _ in series for label in vs))
    targets = {label: t for _, vs, _ in series for label, (_, t) in vs.items() if t is not None}
    absolute: dict[str, float] = {}
    for _, _, vt in series:
        absolute.update(vt)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(1, len(series))
    for i, (variant, vs, _) in enumerate(series):
        xs = [j + i * width for j, label in enumerate(labels) if label in vs]
        ys = [vs[label][0] for label in labels if label in vs]
        left.bar(xs, ys, width, label=variant)
    for j, label in enumerate(labels):
        if label in targets:
            left.hlines(targets[label], j - width / 2, j + width * (len(series) - 0.5), colors="black",
                        linestyles="dashed", linewidth=1)
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(labels))], labels, rotation=30,
                    ha="right")
    left.set_ylabel("fraction of the ceiling (1.0 = ceiling; higher is better)")
    left.set_title("W1-W5 against the pure-Python ceiling (dashed: target)")
    left.legend(title="run")
    names = list(absolute)
    right.barh(names, [absolute[n] for n in names], color="tab:green")
    right.axvline(1.0, color="black", linestyle="dashed", linewidth=1)
    right.set_xlabel("ours / absolute target (lower is better)")
    right.set_title("Without a ceiling (dashed: target)")
    right.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out, metadata={"Date": None} if out.suffix == ".svg" else None)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    draw(Path(argv[0]), [Path(a) for a in argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
