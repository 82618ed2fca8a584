"""The front ends' shared kit (`noex-lab node`, `top`, `demo`, the `%noex` magics, the tests'
and benchmarks' node processes): the cluster option group (`options`), the child-node line
protocol (`child_protocol`), the child-process launcher (`processes`), the membership model of the
cluster views (`cluster_model`) and signal handling (`signals`). It sits above `core` and
`distribution` and below `lab`, `terminal`, `testing` and `cli`, and imports neither IPython nor
rich."""
