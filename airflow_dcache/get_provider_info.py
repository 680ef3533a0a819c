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
                    "roles": {
                        "label": "Roles",
                        "description": "Roles to assert at login, comma-separated (e.g. admin); "
                        "dCache leaves held roles inactive otherwise.",
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
        "asset-uris": [
            {"schemes": ["dcache"], "handler": "airflow_dcache.assets.dcache.sanitize_uri"},
        ],
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
                "python-modules": ["airflow_dcache.triggers.qos", "airflow_dcache.triggers.bulk"],
            },
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
    }
