"""What operators see: Prometheus metrics, the fleet-state gauges, the figures shared with
``archiver inspect``, and log formats."""
