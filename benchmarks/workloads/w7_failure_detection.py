"""W7 failure-detection: 3 `noex-lab node` processes form a cluster as in W6 (N=3); 0.5 s after
every node has converged one non-seed node is killed (the wall time is noted just before the
signal); each survivor prints `DOWN <victim> <wall_us> <reason>`. Value = the later survivor's
detection time - kill time, in seconds; each survivor's time is in params.per_survivor_s.

Variants (WORKLOADS.md): `sigkill-default` (heartbeat 5000 ms x 3, noex_lab's default) and
`sigkill-1sx3` (1000 ms x 3); supplementary `sigstop-default` / `sigstop-1sx3` freeze the victim
with SIGSTOP instead (its sockets stay open, so only heartbeats detect it), then SIGCONT + stop.
The issue's target: SIGKILL seen within 50 ms.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import anyio

from ..cluster_formation import Formation, form_cluster
from ..common import Context, Line, Measurement, Workload
from ..nodes import NodeError, stop_all_async, wall_us

SETTLE_S = 0.5
FORMATION_TIMEOUT_S = 30.0
VARIANTS: tuple[tuple[str, int, int, int], ...] = (
    # (variant, signal, heartbeat_interval_ms, heartbeat_miss_threshold)
    ("sigkill-default", signal.SIGKILL, 5000, 3),
    ("sigkill-1sx3", signal.SIGKILL, 1000, 3),
    ("sigstop-default", signal.SIGSTOP, 5000, 3),
    ("sigstop-1sx3", signal.SIGSTOP, 1000, 3),
)


async def one(variant: str, sig: int, interval_ms: int, misses: int) -> tuple[float, dict[str, Any]]:
    formation = Formation(3)
    try:
        await form_cluster(formation, time.monotonic() + FORMATION_TIMEOUT_S, heartbeat_interval_ms=interval_ms,
                           heartbeat_miss_threshold=misses, prefix="f")
        await anyio.sleep(SETTLE_S)
        victim = formation.nodes[-1]
        assert victim.id is not None
        survivors = formation.nodes[:-1]
        kill_us = wall_us()
        victim.signal(sig)
        # Detection needs at most interval x misses (plus a check period); bound it generously.
        deadline = time.monotonic() + 10.0 + 3 * interval_ms * misses / 1000.0
        prefix = f"DOWN {victim.id} "
        detected: dict[str, int] = {}
        reasons: dict[str, str] = {}
        for node in survivors:
            _, line = await node.wait_line(lambda s: s.startswith(prefix), deadline,
                                           f"{node.name} reporting {victim.name} down")
            parts = line.split()
            detected[node.name] = int(parts[2])
            reasons[node.name] = parts[3] if len(parts) > 3 else "?"
        if any(t < kill_us for t in detected.values()):
            raise NodeError(f"a DOWN line predates the kill: {detected} < {kill_us}")
        per = {name: round((t - kill_us) / 1e6, 4) for name, t in detected.items()}
        value = max(per.values())
        params = {
            "variant": variant, "signal": signal.Signals(sig).name, "heartbeat_interval_ms": interval_ms,
            "heartbeat_miss_threshold": misses, "per_survivor_s": per, "reasons": reasons, "n": 3,
            "settle_s": SETTLE_S, "formation_s": round((formation.converged_at_us - formation.t0_us) / 1e6, 4),
        }
        return value, params
    finally:
        await stop_all_async(formation.nodes)  # SIGCONT first, so a frozen victim can be stopped


async def run(ctx: Context) -> list[Measurement]:
    results = []
    for variant, sig, interval_ms, misses in VARIANTS:
        try:
            value, params = await one(variant, sig, interval_ms, misses)
        except Exception as exc:  # this variant fails alone; the others still run
            results.append(Measurement("W7-failure-detection", None, "s",
                                       ctx.params(variant=variant, error=f"{type(exc).__name__}: {exc}")))
            continue
        results.append(Measurement("W7-failure-detection", value, "s", ctx.params(**params)))
    return results


WORKLOAD = Workload(
    id="W7",
    name="failure-detection",
    lines=(
        Line("W7-failure-detection", "s", higher_is_better=False, variant="sigkill-default", abs_target=0.05,
             abs_note="issue: SIGKILL <= 50 ms"),
        Line("W7-failure-detection", "s", higher_is_better=False, variant="sigkill-1sx3", abs_target=0.05,
             abs_note="issue: SIGKILL <= 50 ms"),
        Line("W7-failure-detection", "s", higher_is_better=False, variant="sigstop-default"),
        Line("W7-failure-detection", "s", higher_is_better=False, variant="sigstop-1sx3"),
    ),
    run=run,
    has_ceiling=False,
    description="3 node processes, one SIGKILLed / SIGSTOPped, time to DOWN on both survivors",
)
