"""A chat across nodes: GlobalRegistry names, RemoteSpawn of sessions, casts fanned out to every member."""
