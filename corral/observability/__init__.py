"""Operating a running server: Prometheus metrics, structured logs and OpenTelemetry traces."""
