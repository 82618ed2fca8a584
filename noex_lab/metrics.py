"""Prometheus metrics of a node: `serve(node, port)` (needs `pip install 'noex-lab[metrics]'`).

`noex-lab node --metrics-port PORT` and `Cluster.start(metrics_port=...)` call it for you; see
`noex_lab.distribution.metrics` for what is measured and how."""

from .distribution.metrics import MetricsServer, NodeMetrics, serve

__all__ = ["MetricsServer", "NodeMetrics", "serve"]
