"""A job queue and workers under a DistributedSupervisor: a lost node's workers migrate, its jobs are re-queued."""
