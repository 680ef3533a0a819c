"""``airflow_dcache.testing``: the bundled dCache-compatible service as pytest fixtures ("moto for dCache").

Installed with the package, the plugin (:mod:`airflow_dcache.testing.plugin`) registers the fixtures
through the ``pytest11`` entry point; they start nothing until a test asks for them. The pieces are
importable for other harnesses too:

* :func:`airflow_dcache.testing.server.start_server` / :class:`~airflow_dcache.testing.server.DCacheTestServer`;
* :class:`airflow_dcache.testing.kafka.KafkaBroker` (tansu);
* :func:`airflow_dcache.testing.events.upload_and_wait`;
* :func:`airflow_dcache.testing.sites.start_sites`: the two-site facility (``main`` with tape, ``buffer``);
* :class:`airflow_dcache.testing.airflow_stack.AirflowStack`: a real Airflow (scheduler, triggerer,
  dag-processor, API server) on SQLite in one directory;
* :class:`airflow_dcache.testing.token_issuer.TokenIssuer`: a WLCG token issuer for bearer-token tests.

Dependencies run one way: ``server`` ← ``testing`` ← ``demo`` (the demo is these harnesses plus sample
data and a progress view); nothing here imports the demo.

See ``docs/testing.md``.
"""
