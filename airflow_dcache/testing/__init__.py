"""``airflow_dcache.testing``: the bundled dCache-compatible service as pytest fixtures."""
