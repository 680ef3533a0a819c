"""Run by the fresh venv's python (not by pytest): import every public class of the installed wheel.

Prints one JSON document: where each module came from, the public classes found, the functions the
registry finds with their digests, and what could not be imported (which fails the test).
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from typing import Any


def _classes(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    declared = getattr(module, "__all__", None)  # a public re-export module lists what it exports
    names = declared or [n for n in dir(module) if not n.startswith("_")]
    out = []
    for name in names:
        obj = getattr(module, name)
        if inspect.isclass(obj) and (declared or obj.__module__ == module_name):
            out.append(f"{module_name}.{name}")
    return out


def _provider_modules(info: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(modules, dotted object paths) the provider info names."""
    modules: set[str] = set()
    objects: set[str] = set()
    for key in ("hooks", "operators", "sensors", "triggers", "transfers"):
        for item in info.get(key, []):
            modules.update(item.get("python-modules", []))
            if "python-module" in item:
                modules.add(item["python-module"])
    for conn in info.get("connection-types", []):
        objects.add(conn["hook-class-name"])
    for uri in info.get("asset-uris", []):
        objects.update(v for k, v in uri.items() if k in ("handler", "factory", "to_openlineage_converter") and v)
    for plugin in info.get("plugins", []):
        objects.add(plugin["plugin-class"])
    objects.update(info.get("extra-links", []))
    modules.update(info.get("filesystems", []))  # module names (Airflow reads their schemes and get_fs)
    objects.update(info.get("queues", []))
    objects.update(d.get("class-name", "") for d in info.get("task-decorators", []) if d.get("class-name"))
    return modules, objects


def main() -> int:
    import airflow_dcache
    from airflow_dcache.get_provider_info import get_provider_info

    info = get_provider_info()
    modules, objects = _provider_modules(info)
    modules |= {"airflow_dcache.hooks.models", "airflow_dcache.hooks.dcache", "airflow_dcache.hooks.dcache_async",
                "airflow_dcache.events.model", "airflow_dcache.events.filters", "airflow_dcache.events.payload",
                "airflow_dcache.exceptions", "airflow_dcache.testing", "airflow_dcache.testing.plugin",
                "airflow_dcache.server.app", "airflow_dcache.functions.registry"}
    report: dict[str, Any] = {"package": airflow_dcache.__file__, "classes": [], "objects": [], "errors": [],
                              "module_files": {}}
    for name in sorted(modules):
        try:
            report["classes"].extend(_classes(name))
            report["module_files"][name] = importlib.import_module(name).__file__
        except Exception as exc:  # report every failure, not only the first
            report["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
    for path in sorted(objects):
        module_name, _, attr = path.rpartition(".")
        try:
            getattr(importlib.import_module(module_name), attr)
            report["objects"].append(path)
        except Exception as exc:
            report["errors"].append(f"{path}: {type(exc).__name__}: {exc}")

    from airflow_dcache.functions import registry

    base = registry.default_functions_dir()
    report["functions_dir"] = str(base) if base else None
    report["functions"] = {}
    if base is not None:
        for entry in sorted(base.iterdir()):
            if (entry / "main.py").is_file():
                report["functions"][entry.name] = registry.find_function(entry.name).digest
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
