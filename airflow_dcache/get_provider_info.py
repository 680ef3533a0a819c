"""Provider metadata read by Airflow's ProvidersManager through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_dcache import __version__


def get_provider_info() -> dict[str, Any]:
    """Return the provider description; the connection form is declared here, not in hook widgets."""
    return {
        "package-name": "airflow-dcache",
        "name": "dCache",
        "description": "Hooks, event triggers, sensors and operators for the dCache storage system.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "dCache",
                "external-doc-url": "https://www.dcache.org/manuals/",
                "tags": ["storage"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "dcache",
                "hook-class-name": "airflow_dcache.hooks.dcache.DCacheHook",
                "hook-name": "dCache",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "WebDAV door URL",
                        "login": "Username",
                        "password": "Password",
                    },
                    "placeholders": {
                        "host": "https://dcache.example.org:2880",
                        "login": "alice",
                    },
                },
                "conn-fields": {
                    "frontend_url": {
                        "label": "Frontend URL",
                        "description": "REST base; default: the door's host, port 3880, /api/v1.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "auth_type": {
                        "label": "Authentication",
                        "description": "How requests are authenticated; empty: guessed from the filled fields.",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["basic", "bearer", "token_file", "macaroon", "x509", "none", None],
                        },
                    },
                    "token": {
                        "label": "Bearer token or macaroon",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "token_file": {
                        "label": "Token file",
                        "description": "Path of an OIDC access token file; re-read when it changes.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "client_cert": {
                        "label": "Client certificate (PEM path)",
                        "schema": {"type": ["string", "null"]},
                    },
                    "client_key": {
                        "label": "Client key (PEM path)",
                        "schema": {"type": ["string", "null"]},
                    },
                    "ca_bundle": {
                        "label": "CA bundle (PEM path)",
                        "schema": {"type": ["string", "null"]},
                    },
                    "verify": {
                        "label": "Verify TLS",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                    "timeout": {
                        "label": "Timeout (s)",
                        "schema": {"type": ["number", "null"], "default": 60, "minimum": 1},
                    },
                    "protocol": {
                        "label": "Protocol",
                        "description": "Scheme when the host is a bare name (e.g. from a URI); default https.",
                        "schema": {"type": ["string", "null"], "enum": ["https", "http", None]},
                    },
                    "retries": {
                        "label": "Retries",
                        "description": "Retries of idempotent requests on connection errors and 5xx.",
                        "schema": {"type": ["integer", "null"], "default": 3, "minimum": 0},
                    },
                    "allowed_roots": {
                        "label": "Allowed roots",
                        "description": "Trees this connection may act on, comma-separated absolute paths; "
                        "a path outside is refused before any request. Empty: no limit.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "assert_roles": {
                        "label": "Assert roles",
                        "description": "when_needed (default): the roles go only with a metadata change a "
                        "plain login was refused (QoS, xattrs, labels, bulk); always: with every request.",
                        "schema": {"type": ["string", "null"], "enum": ["when_needed", "always", None]},
                    },
                    "roles": {
                        "label": "Roles",
                        "description": "Roles the login may assert, comma-separated (e.g. admin); dCache "
                        "leaves held roles inactive unless asserted (see Assert roles).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "site": {
                        "label": "Site name",
                        "description": "Site in dcache://<site>/<path> asset URIs; default: the connection id "
                        "with '_' as '-'.",
                        "schema": {"type": ["string", "null"], "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
                    },
                },
            }
        ],
        "hooks": [
            {
                "integration-name": "dCache",
                "python-modules": [
                    "airflow_dcache.hooks.dcache",
                    "airflow_dcache.hooks.dcache_async",
                    "airflow_dcache.hooks.billing",
                ],
            }
        ],
        "asset-uris": [
            {
                "schemes": ["dcache"],
                "handler": "airflow_dcache.assets.dcache.sanitize_uri",
                "factory": "airflow_dcache.assets.dcache.create_asset",
                "to_openlineage_converter": "airflow_dcache.assets.dcache.convert_asset_to_openlineage",
            },
        ],
        # ObjectStoragePath("dcache://<conn>/<path>"): fsspec filesystem over the hook (docs/filesystem.md).
        "filesystems": ["airflow_dcache.fs.dcache"],
        "plugins": [
            {"name": "dcache", "plugin-class": "airflow_dcache.plugins.dcache.DCachePlugin"},
        ],
        "triggers": [
            {
                "integration-name": "dCache",
                "python-modules": ["airflow_dcache.triggers.storage_events", "airflow_dcache.triggers.billing"],
            },
            {
                "integration-name": "dCache",
                "python-modules": ["airflow_dcache.triggers.qos", "airflow_dcache.triggers.bulk",
                                   "airflow_dcache.triggers.files_wait"],
            },
        ],
        "queues": [
            "airflow_dcache.queues.dcache.DCacheSseMessageQueueProvider",
            "airflow_dcache.queues.dcache.DCacheBillingMessageQueueProvider",
        ],
        "operators": [
            {
                "integration-name": "dCache",
                "python-modules": [
                    "airflow_dcache.operators.namespace",
                    "airflow_dcache.operators.qos",
                    "airflow_dcache.operators.stage",
                    "airflow_dcache.operators.replicate",
                    "airflow_dcache.operators.function",
                    "airflow_dcache.operators.chunk_wait",
                ],
            }
        ],
        "sensors": [{"integration-name": "dCache", "python-modules": ["airflow_dcache.sensors.dcache"]}],
        "transfers": [
            {
                "source-integration-name": "Local",
                "target-integration-name": "dCache",
                "python-module": "airflow_dcache.transfers.local_to_dcache",
            },
            {
                "source-integration-name": "dCache",
                "target-integration-name": "Local",
                "python-module": "airflow_dcache.transfers.dcache_to_local",
            },
        ],
        "task-decorators": [
            {"name": "dcache_function",
             "class-name": "airflow_dcache.decorators.dcache_function.dcache_function_task"},
        ],
        "extra-links": [
            "airflow_dcache.links.dcache.DCacheFileLink",
            "airflow_dcache.links.dcache.DCacheViewLink",
            "airflow_dcache.links.dcache.DCacheRequestLink",
            "airflow_dcache.operators.function.DCacheFunctionOutputsLink",
        ],
        "config": {
            "dcache": {
                "description": "The dCache provider: whose dCache identity acts for an Airflow user, and the "
                "dCache view in the Airflow UI (docs/ui.md).",
                "options": {
                    "user_connections": {
                        "description": "JSON object, Airflow user name -> the dCache connection id of that person. "
                        "The dCache view (and manual triggers) act with it; such connections are never offered "
                        "to other users in the view.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": '{"alice": "dcache_alice"}',
                        "default": "",
                    },
                    "user_connection_template": {
                        "description": "Connection id pattern containing {username}, for users not in "
                        "user_connections; used when that connection exists.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "dcache_user_{username}",
                        "default": "",
                    },
                    "ui_connections": {
                        "description": "Comma-separated connection ids the dCache view offers; empty: every "
                        "connection of type dcache (people's own connections excluded).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "dcache_main,dcache_buffer",
                        "default": "",
                    },
                    "ui_path_prefixes": {
                        "description": "Comma-separated subtrees the dCache view may show, to every user. Empty: "
                        "users without their own dCache identity see only the roots the storage-event watchers "
                        "watch plus ui_extra_roots (nothing if there are none); mapped users what dCache lets "
                        "them see. (Formerly the default was '/'.)",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/data/incoming,/data/processed",
                        "default": "",
                    },
                    "ui_extra_roots": {
                        "description": "Comma-separated subtrees the dCache view shows to users without their own "
                        "dCache identity, besides the watched roots (only when ui_path_prefixes is empty).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/data/processed",
                        "default": "",
                    },
                    "ui_airflow_api_url": {
                        "description": "Where the dCache view's backend reaches Airflow's REST API with the user's "
                        "token; empty: [api] base_url + /api/v2, else the local API server port.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "http://127.0.0.1:8080/api/v2",
                        "default": "",
                    },
                    "ui_nav_name": {
                        "description": "Label of the dCache view's navigation entry.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "Storage",
                        "default": "dCache",
                    },
                },
            },
        },
    }
