"""``airflow_dcache.testing``: the bundled dCache-compatible service as pytest fixtures ("moto for dCache").

Installed with the package, the plugin (:mod:`airflow_dcache.testing.plugin`) registers the fixtures
through the ``pytest11`` entry point; they start nothing until a test asks for them. The pieces are
importable for other harnesses too:

* :func:`airflow_dcache.testing.server.start_server` / :class:`~airflow_dcache.testing.server.DCacheTestServer`;
* :class:`airflow_dcache.testing.kafka.KafkaBroker` (tansu);
* :func:`airflow_dcache.testing.events.upload_and_wait`.

See ``docs/testing.md``.
"""
