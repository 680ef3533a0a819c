"""Every private name of Airflow or another provider that this provider relies on, in one place.

Upstream providers keep their version switches in ``version_compat.py``; this module does the same for
the few private attributes we could not avoid, with the versions they were read in. If an upgrade moves
one, ``tests/test_version_compat.py`` fails and names it, instead of a watcher quietly losing its state.

- ``AssetStateStoreAccessors._by_name / _by_uri / _total`` (task SDK 1.3.2): a trigger row that feeds
  several assets gets one accessor object for all of them, and only the private maps say which is
  which; the public ``__getitem__`` needs the ``Asset`` object, which a trigger does not have.
- ``airflow.sdk.definitions._internal.mixins.ResolveMixin`` (task SDK 1.3.2): the one base of XComArgs
  and mapped-task arguments; an operator that validates its arguments at parse time must skip those.
- The Kafka provider's ``KafkaConsumerHook._get_client`` (apache-kafka provider 2.1.0): the one override
  point for ``group.id`` and the initial offset, used by ``hooks/billing.py:DCacheBillingConsumerHook``.
- The Kafka provider's ``KafkaSharedStreamProducer._ensure_manual_commit`` and ``._resolve_floor``
  (apache-kafka provider 2.1.0): ``triggers/billing_stream.py:BillingStreamProducer`` subclasses the
  shared-stream producer and keeps its commit rules.
- ``airflow.models.dagrun.get_or_create_dagrun`` (apache-airflow 3.3.2): ``dag.test()`` creates its run
  through it and has no parameter for triggering asset events; ``airflow_dcache.testing.dagrun`` wraps it,
  in its child process only, to attach the events a test's watchers reported (``AssetEvent`` rows on the
  run's ``consumed_asset_events``), so an event-driven DAG is tested as the scheduler would run it.
- ``airflow.sdk.execution_time.task_runner.SUPERVISOR_COMMS`` and ``comms.MaskSecret`` (task SDK 1.3.2): in
  a task, the supervisor masks the task's logs (the task sends them unmasked: ``configure_logging(...,
  sending_to_supervisor=True)``), so a credential minted while the task runs goes to the supervisor's
  masker only. The public ``mask_secret`` also adds it to the task's own masker, which rebuilds its
  expression for it and is read only when the task's template fields are rendered, before any minting:
  that rebuild was a quarter of a chunk task's CPU (:func:`mask_for_task_logs`).
"""

from __future__ import annotations

from typing import Any

#: The versions the private names below were read in.
CHECKED_AGAINST: dict[str, str] = {
    "apache-airflow": "3.3.2",
    "apache-airflow-task-sdk": "1.3.2",
    "apache-airflow-providers-apache-kafka": "2.1.0",
}

#: (module, attribute path) of every private name used, checked by the test.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("airflow.sdk.execution_time.context", "AssetStateStoreAccessors.__init__:_by_name,_by_uri,_total"),
    ("airflow.sdk.definitions._internal.mixins", "ResolveMixin"),
    ("airflow.providers.apache.kafka.hooks.consume", "KafkaConsumerHook._get_client"),
    ("airflow.providers.apache.kafka.triggers.shared_stream", "KafkaSharedStreamProducer._ensure_manual_commit"),
    ("airflow.providers.apache.kafka.triggers.shared_stream", "KafkaSharedStreamProducer._resolve_floor"),
    ("airflow.models.dagrun", "get_or_create_dagrun"),
    ("airflow.sdk.execution_time.task_runner", "__annotations__:SUPERVISOR_COMMS"),  # set when a task starts
    ("airflow.sdk.execution_time.comms", "MaskSecret"),
)


def first_asset_state_accessor(store: Any) -> Any:
    """The accessor of a trigger's asset state store; the first one when the row feeds several assets."""
    if store is None:
        return None
    total = getattr(store, "_total", 1)
    if total > 1:
        accessors = list(getattr(store, "_by_name", {}).values()) + list(getattr(store, "_by_uri", {}).values())
        return accessors[0] if accessors else None
    return store


def is_resolved_at_runtime(value: Any) -> bool:
    """An XComArg or a mapped-group argument: its value is known only when the task runs."""
    from airflow.sdk.definitions._internal.mixins import ResolveMixin

    return isinstance(value, ResolveMixin)


def mask_for_task_logs(secret: str) -> None:
    """Keep ``secret`` out of this process's logs: in a task, with its supervisor's masker only.

    Outside a task (the triggerer, a DAG test in one process) this is Airflow's ``mask_secret``. In a
    task the supervisor is told, as ``mask_secret`` would, but the task's own masker is left alone: it
    never sees the task's logs, and rebuilding it for every per-file credential cost as much again.
    """
    from airflow.sdk.execution_time import task_runner

    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if comms is None:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
        return
    from airflow.sdk.execution_time.comms import MaskSecret

    comms.send(MaskSecret(value=secret, name=None))
