"""Runnable examples of noex_lab clusters, one package each; every node is one command:

    python -m examples.distributed_chat.node ...         GlobalRegistry, RemoteSpawn, casts across nodes
    python -m examples.distributed_counter.node ...      RemoteMonitor, "noconnection", failover
    python -m examples.distributed_worker_pool.node ...  DistributedSupervisor, a job queue with leases

Each package's README.md has the exact lines to run in separate terminals.
"""
