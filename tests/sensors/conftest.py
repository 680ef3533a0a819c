"""Sensors use the operators' fixtures (two real service instances, connections, a task context)."""

from tests.operators.conftest import *  # noqa: F403
