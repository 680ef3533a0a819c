"""Example of what a site adds itself: a link to its own dCache web interface next to the dCache view.

Airflow loads every module in its plugins folder. The dCache view itself (``DCachePlugin``) comes with
the provider package and is NOT registered here again; this module only shows how a site extends the
navigation. Set ``DCACHE_SITE_WEB_URL`` (e.g. ``https://dcache.example.org:3880/``, dCache View) and a
``dCache View`` entry opens it; unset, the plugin adds nothing.

To re-brand the provider's entry instead, set ``[dcache] ui_nav_name`` (see docs/ui.md); copying the
plugin class here would register it twice (Airflow reports "already registered" as an import error).
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin

_URL = os.environ.get("DCACHE_SITE_WEB_URL", "").strip()


class SiteDCacheLinks(AirflowPlugin):
    """A navigation link to the site's own dCache web interface (only when configured)."""

    name = "site_dcache_links"
    external_views = [{"name": "dCache View", "href": _URL, "destination": "nav", "category": "browse"}] if _URL else []
