"""The front ends' shared kit (`noex-lab node`, `noex-lab top`, `noex-lab demo`, the `%noex` magics):
one option group for the cluster settings, the secret and TLS (`options`), the child-node line
protocol (`child_protocol`), the membership model of the cluster views (`cluster_model`). It sits
above `core` and `distribution` and below `lab`, `terminal` and `cli`, and imports neither IPython
nor rich."""
