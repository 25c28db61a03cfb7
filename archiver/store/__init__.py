"""The Redis side: partition state, the due index, fleet backoff and counters, the
notification and acknowledgement streams, the scheduler's leader lease, and the Lua scripts
that make each transition atomic."""
