"""``@task.dcache_function``: a Python callable that decides *what* a dCache function runs on.

The decorated callable runs on the worker and returns the inputs (a path, file records, a list of
either) or ``{"inputs": ..., "parameters": {...}}``; the function then runs exactly as with
:class:`~airflow_dcache.operators.function.DCacheFunctionOperator`, whose arguments the decorator
takes. Thin on purpose: no code is shipped into the container, only the selection is computed.

    @task.dcache_function(function="hdf5-preview", output_dir="/data/previews")
    def newest(listing):
        return {"inputs": listing["files"][-1:], "parameters": {"frame": 0}}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from airflow_dcache.operators.function import DCacheFunctionOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.decorator import TaskDecorator


class _DCacheFunctionDecoratedOperator(DecoratedOperator, DCacheFunctionOperator):
    custom_operator_name = "@task.dcache_function"
    template_fields: Sequence[str] = (*DCacheFunctionOperator.template_fields, "op_args", "op_kwargs")

    def __init__(self, *, python_callable: Callable[..., Any], op_args: Any = None, op_kwargs: Any = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("inputs", [])
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)

    def execute(self, context: Context) -> Any:
        spec = self.python_callable(*self.op_args, **self.op_kwargs)
        if isinstance(spec, Mapping) and "inputs" in spec:
            unknown = sorted(set(spec) - {"inputs", "parameters"})
            if unknown:
                raise ValueError(f"@task.dcache_function: unknown keys {unknown} (allowed: inputs, parameters)")
            parameters = spec.get("parameters") or {}
            if not isinstance(parameters, Mapping):
                raise ValueError("@task.dcache_function: parameters must be a JSON object")
            self.inputs = spec["inputs"]
            self.parameters = {**dict(self.parameters), **parameters}
        else:
            self.inputs = spec
        return DCacheFunctionOperator.execute(self, context)


def dcache_function_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a callable that returns the inputs of a dCache function run.

    Takes every :class:`~airflow_dcache.operators.function.DCacheFunctionOperator` argument except
    ``inputs``. :param python_callable: the function returning the inputs (or ``{"inputs", "parameters"}``).
    """
    return task_decorator_factory(python_callable=python_callable,
                                  decorated_operator_class=_DCacheFunctionDecoratedOperator, **kwargs)
