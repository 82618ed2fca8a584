"""Terminal front ends: `noex-lab top` (a live view of a cluster) and `noex-lab demo`.

They are clients of the public API only: an observer node, its event stream and
`Cluster.snapshot()`; the command line (`noex_lab.cli`) only wires them up.
"""
