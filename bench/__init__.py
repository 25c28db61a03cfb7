"""Benchmarks: each compares the archiver with a baseline measured in the same run."""
