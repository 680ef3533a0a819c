"""Task decorators of the dCache provider (``@task.dcache_function``)."""
