"""For the demo, tests and benchmarks, never on a production path: a private Redis server, a
reference producer and the demo itself."""
