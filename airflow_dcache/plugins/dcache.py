"""``DCachePlugin``: the dCache entry of the Airflow UI (a FastAPI app + an external view).

Installing the provider brings it: Airflow finds it through the package's ``airflow.plugins`` entry
point (with the default lazy provider discovery, Airflow 3.3.2 does not load provider-declared
plugins), and it is also declared under ``plugins`` in the provider info (``airflow providers``
listings, docs), as the Kafka provider does. It is never registered a second time from a plugins
folder.
"""

from __future__ import annotations

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from airflow_dcache.plugins.app import app

URL_PREFIX = "/dcache"
NAV_NAME = conf.get("dcache", "ui_nav_name", fallback="dCache") or "dCache"


class DCachePlugin(AirflowPlugin):
    """Browse dCache, inspect files, watch live events, run a function DAG on files, see lag."""

    name = "dcache"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "dCache view"}]
    external_views = [{
        "name": NAV_NAME,
        "href": f"{URL_PREFIX}/ui/",
        "destination": "nav",
        "url_route": "dcache",
        "icon": f"{URL_PREFIX}/icon.svg",
        "category": None,
    }]
