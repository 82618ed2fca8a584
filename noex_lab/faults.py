"""`noex_lab.faults`: network faults injected on purpose, for tests, demos and tutorials.

`partition`/`heal` cut and restore links between nodes of this OS process, `shape` makes a link
slow or lossy; `Faults` is one node's rule set (`node.faults`), `FaultControl` changes the rules
of another node over the cluster (it must accept fault injection). Not for production code."""

from .distribution.faults import FaultControl, Faults, heal, partition, shape

__all__ = ["FaultControl", "Faults", "heal", "partition", "shape"]
