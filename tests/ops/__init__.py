"""Checks of the deployment files (compose, Dockerfile, Prometheus, Grafana, systemd) against
the code they run: real subcommands and options, exported metric names, files that exist.
Their shared helpers are in ``tests.ops.deployment``."""
