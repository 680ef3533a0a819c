"""Asset URI support for the ``dcache`` scheme (``dcache://<site>/<path>``)."""
