"""The guard and runtime of a run: what a config may make Python run (targets), the checks before any training,
CPU threads, DDP ranks and the debug modes."""
