"""A counter watched with RemoteMonitor: what "noconnection" means when its node dies, and a failover."""
