"""Running it unattended: Prometheus metrics and systemd notify."""
