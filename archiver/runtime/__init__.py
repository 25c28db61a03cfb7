"""The running fleet: the scheduler that applies notifications and dispatches, the task queue,
and the worker side that archives one entry per attempt under a fenced claim."""
