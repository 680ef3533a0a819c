"""``GET /api/v1/swagger.json``: a Swagger 2.0 description of the frontend's ``/api/v1`` endpoints.

dCache's frontend serves the description its swagger-jersey builds from the resources' annotations
(``io.swagger.jaxrs.listing.ApiListingResource``, base path ``/api/v1``, no ``host``, so a client
uses the host it fetched the document from). That listing needs no login: the frontend's
AuthenticationHandler lets an anonymous request through and the listing resource checks nothing;
credentials that are sent are still verified, so a wrong password is a 401 here too.

This document describes exactly what this service implements, in dCache's paths, tags and
parameter names, with the status codes this service really answers (where they differ from
dCache's annotations the description says so). Kept as Python data, so it ships with the package
without package-data configuration; the JSON text is built once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from airflow_dcache.server.http.auth import Authenticator
from airflow_dcache.server.services.bulk import ACTIVITIES, EXPANSIONS, MAX_UNFINISHED_PER_USER
from airflow_dcache.server.services.storage_events.metronome import MAX_DELAY, MAX_FREQUENCY, MIN_DELAY, MIN_FREQUENCY
from airflow_dcache.server.services.tape import LIFETIME_UNITS, QOS_NAMES

JSON = "application/json"
SSE = "text/event-stream"
BASIC: list[dict[str, list[str]]] = [{"basicAuth": []}]
MAX_OFFSET = 999_999_999_999_999_999  # 18 digits: what the namespace listing's offset/limit accept

_PHRASES = {200: "OK", 201: "Created", 204: "No Content", 303: "See Other", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 406: "Not Acceptable", 409: "Conflict",
            413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
            429: "Too Many Requests", 507: "Insufficient Storage"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


def _errors(*codes: int, **notes: str) -> dict[str, Any]:
    """Error responses: dCache's ``{"status", "title", "detail"}`` body (ErrorResponseProvider)."""
    out: dict[str, Any] = {}
    for code in codes:
        text = notes.get(f"e{code}", _PHRASES[code])
        out[str(code)] = {"description": text, "schema": _ref("Error")}
    return out


def _ok(code: int = 200, schema: dict[str, Any] | None = None, description: str | None = None,
        headers: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"description": description or _PHRASES[code]}
    if schema is not None:
        doc["schema"] = schema
    if headers:
        doc["headers"] = headers
    return {str(code): doc}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "type": "string", "description": description}


def _query(name: str, kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "type": kind, "description": description, **extra}


def _body(schema: dict[str, Any], description: str, required: bool = True) -> dict[str, Any]:
    return {"name": "body", "in": "body", "required": required, "description": description, "schema": schema}


def _op(tag: str, summary: str, responses: dict[str, Any], *, parameters: list[dict[str, Any]] | None = None,
        produces: list[str] | None = None, consumes: list[str] | None = None, description: str | None = None,
        security: list[dict[str, list[str]]] | None = None, operation_id: str, deprecated: bool = False,
        ) -> dict[str, Any]:
    doc: dict[str, Any] = {"tags": [tag], "summary": summary, "operationId": operation_id}
    if description:
        doc["description"] = description
    if consumes:
        doc["consumes"] = consumes
    doc["produces"] = produces or [JSON]
    doc["parameters"] = parameters or []
    doc["responses"] = responses
    doc["security"] = security if security is not None else BASIC
    if deprecated:
        doc["deprecated"] = True
    return doc


# -- model definitions ---------------------------------------------------------------------------
_STR = {"type": "string"}
_INT = {"type": "integer", "format": "int32"}
_LONG = {"type": "integer", "format": "int64"}
_BOOL = {"type": "boolean"}
_STRINGS = {"type": "array", "items": _STR}
_STRING_MAP = {"type": "object", "additionalProperties": _STR}

DEFINITIONS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "An error, as dCache's ErrorResponseProvider renders it.",
        "properties": {"status": {"type": "string", "description": "The HTTP status code, as a string."},
                       "title": _STR, "detail": _STR},
    },
    "Success": {"type": "object", "properties": {"status": {"type": "string", "enum": ["success"]}}},
    "UserAttributes": {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["AUTHENTICATED", "ANONYMOUS"]},
            "uid": _LONG, "gids": {"type": "array", "items": _LONG}, "username": _STR,
            "homeDirectory": _STR, "rootDirectory": _STR, "email": _STRINGS,
            "roles": {**_STRINGS, "description": "Roles the login asserted."},
            "unassertedRoles": {**_STRINGS, "description": "Roles the user holds but did not ask for."},
        },
        "required": ["status"],
    },
    "Checksum": {"type": "object", "properties": {
        "type": {"type": "string", "enum": ["ADLER32", "MD5_TYPE", "MD4_TYPE", "SHA1", "SHA256", "SHA512"]},
        "value": _STR}},
    "JsonFileAttributes": {
        "type": "object",
        "description": "dCache's JsonFileAttributes; keys without a value are left out (Jackson NON_NULL).",
        "properties": {
            "fileName": {**_STR, "description": "Name of the file (in listings)."},
            "fileMimeType": {**_STR, "description": "MIME type; application/vnd.dcache.folder for directories."},
            "size": {**_LONG, "description": "File size in bytes."},
            "creationTime": {**_LONG, "description": "Creation time, unix time in milliseconds."},
            "mtime": {**_LONG, "description": "Last modification time, unix time in milliseconds."},
            "atime": _LONG, "ctime": _LONG,
            "pnfsId": {**_STR, "description": "The PNFS-ID of the file (unique id)."},
            "fileType": {"type": "string", "enum": ["REGULAR", "DIR", "LINK", "SPECIAL"]},
            "nlink": _INT, "mode": {**_INT, "description": "POSIX.1 file mode."},
            "owner": _LONG, "group": _LONG,
            "fileLocality": {"type": "string",
                             "enum": ["ONLINE", "NEARLINE", "ONLINE_AND_NEARLINE", "LOST", "UNAVAILABLE", "NONE"]},
            "locations": _STRINGS,
            "currentQos": {"type": "string", "enum": list(QOS_NAMES)},
            "targetQos": {"type": "string", "enum": list(QOS_NAMES)},
            "extendedAttributes": _STRING_MAP,
            "labels": _STRINGS,
            "checksums": {"type": "array", "items": _ref("Checksum")},
            "accessLatency": {"type": "string", "enum": ["ONLINE", "NEARLINE"]},
            "retentionPolicy": {"type": "string", "enum": ["CUSTODIAL", "REPLICA", "OUTPUT"]},
            "hsm": _STR,
            "storageInfo": {"description": "dCache renders a StorageInfo object; this service a string "
                                           "<hsm>:<storage class>@<hsm>."},
            "path": {**_STR, "description": "The file's path (GET /id/{pnfsid} only)."},
            "sourcePath": {**_STR, "description": "The file's name (in a label's virtual directory)."},
            "children": {"type": "array", "items": _ref("JsonFileAttributes"),
                         "description": "The directory's entries, with children=true."},
        },
    },
    "QosList": {"type": "object", "properties": {"name": _STRINGS, "message": _STR, "status": _STR}},
    "BackendCapabilityResponse": {"type": "object", "properties": {
        "status": _STR, "message": _STR,
        "backendCapability": {"type": "object", "properties": {
            "name": _STR, "transition": _STRINGS,
            "metadata": {"type": "object", "properties": {
                "cdmi_data_redundancy_provided": _STR, "cdmi_geographic_placement_provided": _STRINGS,
                "cdmi_latency_provided": _STR}}}}}},
    "BulkRequestSummary": {"type": "object", "properties": {
        "id": _STR, "url": _STR, "owner": {**_STR, "description": "uid:gid"}, "activity": _STR,
        "status": _STR, "arrivedAt": _LONG, "lastModified": _LONG}},
    "BulkRequestTargetInfo": {"type": "object", "properties": {
        "id": _LONG, "target": _STR, "state": _STR, "submittedAt": _LONG, "startedAt": _LONG,
        "finishedAt": _LONG, "errorType": _STR, "errorMessage": _STR}},
    "BulkRequestInfo": {"type": "object", "properties": {
        "uid": _STR, "status": {"type": "string", "enum": ["INCOMPLETE", "QUEUED", "STARTED", "COMPLETED", "CANCELLING",
                                                           "CANCELLED"]},
        "arrivedAt": _LONG, "startedAt": _LONG, "lastModified": _LONG, "targetPrefix": _STR,
        "nextId": {**_LONG, "description": "Offset of the next page of targets, or -1."},
        "targets": {"type": "array", "items": _ref("BulkRequestTargetInfo")}}},
    "BulkArchivedSummaryInfo": {"type": "object", "properties": {
        "uid": _STR, "owner": _STR, "lastModified": _LONG, "activity": _STR, "status": _STR}},
    "BulkArchivedRequestInfo": {"type": "object", "properties": {
        "uid": _STR, "owner": _STR, "activity": _STR, "depth": _STR, "arrivedAt": _LONG, "startedAt": _LONG,
        "lastModified": _LONG, "status": _STR, "targetPrefix": _STR, "initialTargets": _STRINGS,
        "errors": {"type": "object", "additionalProperties": _LONG, "description": "Error type -> count."},
        "succeeded": _LONG, "cancelled": _LONG,
        "failed": _LONG}},
    "BulkRequest": {
        "type": "object",
        "description": "A bulk request. Keys may be spelt camelCase, snake_case or kebab-case; other keys are "
                       "refused.",
        "required": ["activity", "target"],
        "properties": {
            "activity": {"type": "string", "enum": list(ACTIVITIES)},
            "target": {"description": "A list of paths, or a comma-separated string of paths "
                                      f"(at most {EXPANSIONS['NONE']}, {EXPANSIONS['TARGETS']} or "
                                      f"{EXPANSIONS['ALL']} with expand_directories NONE, TARGETS, ALL)."},
            "target_prefix": {"type": "string", "description": "An absolute path prefixed to every target."},
            "expand_directories": {"type": "string", "enum": list(EXPANSIONS)},
            "cancel_on_failure": {"description": "true or false (a boolean or its string)."},
            "clear_on_success": {"description": "true or false (a boolean or its string)."},
            "clear_on_failure": {"description": "true or false (a boolean or its string)."},
            "prestore": {"description": "Accepted and ignored."},
            "arguments": {"type": "object", "description": "Activity arguments: PIN lifetime/lifetimeUnit, "
                                                           "RELEASE id, UPDATE_QOS targetQos, STAGE diskLifetime, "
                                                           "DELETE skipDirs."},
        },
        "example": {"activity": "PIN", "target": ["/data/file1"], "arguments": {"lifetime": "1",
                                                                                 "lifetimeUnit": "HOURS"}},
    },
    "BulkAction": {"type": "object", "required": ["action"], "properties": {
        "action": {"type": "string", "enum": ["cancel"]},
        "paths": {**_STRINGS, "description": "Only these targets; all targets when absent."}}},
    "NamespaceAction": {
        "type": "object",
        "required": ["action"],
        "description": "mkdir (name), mv (destination: absolute, or relative to the parent of the path), "
                       "qos (target), pin (lifetime, lifetime-unit), unpin, chmod (mode, an integer), "
                       "chgrp (gid), set-xattr (attributes, optional mode CREATE|MODIFY|EITHER), rm-xattr "
                       "(names: a name or a list), set-label / rm-label (label).",
        "properties": {
            "action": {"type": "string", "enum": ["mkdir", "mv", "qos", "pin", "unpin", "chmod", "chgrp",
                                                  "set-xattr", "rm-xattr", "set-label", "rm-label"]},
            "name": _STR, "destination": _STR, "target": {"type": "string", "enum": list(QOS_NAMES)},
            "lifetime": {"type": "number", "minimum": 0},
            "lifetime-unit": {"type": "string", "enum": list(LIFETIME_UNITS)},
            "mode": {"description": "chmod: an integer; set-xattr: CREATE, MODIFY or EITHER."},
            "gid": _LONG, "attributes": _STRING_MAP, "names": {"description": "A name or a list of names."},
            "label": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        "example": {"action": "mkdir", "name": "new-subdir"},
    },
    "Paths": {"type": "object", "required": ["paths"], "properties": {"paths": {**_STRINGS, "minItems": 1}}},
    "StageRequest": {"type": "object", "required": ["files"], "properties": {"files": {
        "type": "array", "minItems": 1, "items": {"type": "object", "required": ["path"], "properties": {
            "path": {"type": "string", "minLength": 1},
            "diskLifetime": {**_STR, "description": "An ISO-8601 duration, e.g. PT1H."}}}}},
        "example": {"files": [{"path": "/data/file1", "diskLifetime": "P1D"}]}},
    "StageRequestId": {"type": "object", "properties": {"requestId": _STR}},
    "StageRequestInfo": {"type": "object", "properties": {
        "id": _STR, "createdAt": _LONG, "startedAt": _LONG, "completedAt": _LONG,
        "files": {"type": "array", "items": {"type": "object", "properties": {
            "path": _STR, "state": {"type": "string", "enum": ["SUBMITTED", "STARTED", "CANCELLED", "FAILED",
                                                               "COMPLETED"]},
            "startedAt": _LONG, "finishedAt": _LONG, "error": _STR}}}}},
    "ArchiveInfo": {"type": "object", "properties": {
        "path": _STR, "error": _STR,
        "locality": {"type": "string", "enum": ["DISK", "TAPE", "DISK_AND_TAPE", "NONE", "LOST", "UNAVAILABLE"]}}},
    "EventsMetadata": {"type": "object", "properties": {"channels": {"type": "object", "properties": {
        "maximumPerUser": _INT,
        "lifetimeWhenDisconnected": {"type": "object", "properties": {
            "minimum": _LONG, "maximum": _LONG, "default": _LONG}}}}}},
    "EventStreamMetadata": {"type": "object", "properties": {"description": _STR}},
    "ChannelMetadata": {"type": "object", "properties": {"timeout": {
        **_LONG, "description": "Seconds the channel survives without a connected client."}}},
    "ChannelModification": {"type": "object", "required": ["timeout"], "properties": {"timeout": _LONG}},
    "NewChannel": {"type": "object", "properties": {"client-id": {
        "type": "string", "description": "Lets a client find its channel again (GET /events/channels?client-id=)."}}},
    "PoolGroup": {"type": "object", "description": "Information about a specific poolgroup.", "properties": {
        "name": {**_STR, "description": "The identifier for this selection type."},
        "links": {**_STRINGS, "description": "The associated links."},
        "pools": {**_STRINGS, "description": "The pools that are a member of this poolgroup."},
        "nestedPoolGroups": {**_STRINGS, "description": "The Nested poolGroups that are a member of this poolgroup."}}},
    "PoolSpaceData": {"type": "object", "description": "Space on a pool, in bytes. lru, gap and breakEven are not "
                                                        "modelled by this service and left out.", "properties": {
        "total": _LONG, "free": _LONG, "precious": _LONG, "removable": _LONG, "lru": _LONG, "gap": _LONG,
        "breakEven": {"type": "number", "format": "double"}}},
    "PoolCostData": {"type": "object", "description": "A pool's cost data. This service models only its space; "
                                                       "the queues (mover, store, restore, p2p, p2pClient) are "
                                                       "left out.", "properties": {
        "label": _STR, "space": _ref("PoolSpaceData")}},
    "PoolGroupInfo": {"type": "object", "description": "Container for all metadata requests pertaining to a pool "
                                                       "group.", "properties": {
        "groupSpaceData": {**_ref("PoolSpaceData"), "description": "Aggregated space data for pools in the group."},
        "costDataForPools": {"type": "object", "additionalProperties": _ref("PoolCostData"),
                             "description": "Pool cost information for the pools in the group."},
        "cellDataForPools": {"type": "object", "additionalProperties": {"type": "object"},
                             "description": "Cell data for each of the pools in the group (null here: no "
                                            "cells are modelled)."},
        "groupQueueStat": {"type": "array", "items": {"type": "object"}},
        "groupFileStat": {"type": "array", "items": {"type": "object"}}}},
    "Selector": {
        "type": "object",
        "description": "The selector of the event type: its JSON Schema is GET /events/eventTypes/{type}/selector. "
                       "inotify: path (required), flags. metronome: exactly one of frequency "
                       f"({MIN_FREQUENCY:g} to {MAX_FREQUENCY:g} Hz) or delay ({MIN_DELAY:g} to {MAX_DELAY:g} s), "
                       "message, count.",
        "properties": {"path": _STR, "flags": _STRINGS, "frequency": {"type": "number"}, "delay": {"type": "number"},
                       "message": _STR, "count": {"type": "integer", "minimum": 0}},
        "example": {"path": "/data/incoming", "flags": ["IN_CLOSE_WRITE", "IN_MOVED_TO"]},
    },
}

_LOCATION = {"Location": {"type": "string", "description": "The URL of the new resource."}}
_REQUEST_URL = {"request-url": {"type": "string", "description": "The URL of the new bulk request."}}
_AUTH_ERRORS = (400, 401)  # 400: two credentials at once (header and authz, or two of either)
_NS_PATH = _path("path", "Path of the file or directory, relative to the caller's root; it may contain '/', "
                         "also encoded as %2F (the whole path as one segment), and empty segments ('//'), which "
                         "collapse, as in dCache. It is decoded once; '.' and '..' segments (in any encoding) "
                         "and control characters are refused with 400.")
_FLAG = "Whether to include {}."
_NS_FLAGS = [
    _query("children", "boolean", "Whether to include the directory listing.", default=False),
    _query("locality", "boolean", _FLAG.format("file locality information"), default=False),
    _query("locations", "boolean", _FLAG.format("replica locations"), default=False),
    _query("qos", "boolean", _FLAG.format("quality of service"), default=False),
    _query("xattr", "boolean", _FLAG.format("extended attributes"), default=False),
    _query("labels", "boolean", _FLAG.format("labels"), default=False),
    _query("checksum", "boolean", "Whether to list checksum values.", default=False),
    _query("optional", "boolean", "Whether to include optional attributes (atime, ctime, owner, group, "
                                  "access latency, retention policy, hsm, storage info).", default=False),
    _query("limit", "integer", "Limit the number of entries in the directory listing.", minimum=0,
           maximum=MAX_OFFSET),
    _query("offset", "integer", "Number of entries to skip in the directory listing.", minimum=0,
           maximum=MAX_OFFSET),
]
_LABEL_RANGE = [
    _query("limit", "integer", "Limit the number of entries.", minimum=0, maximum=999_999_999),
    _query("offset", "integer", "Number of entries to skip.", minimum=0, maximum=999_999_999),
]
_BULK_ID = _path("id", "The unique id of the request.")
_CHANNEL_ID = _path("id", "The ID of the channel.")
_EVENT_TYPE = _path("type", "The event type: inotify or metronome.")
_JSON_BODY_ERRORS = (413, 415)  # a body over 1 MiB; a Content-Type other than application/json


def _paths() -> dict[str, Any]:
    p: dict[str, Any] = {}
    p["/user"] = {"get": _op(
        "identity", "Provide information about the current user.",
        {**_ok(schema=_ref("UserAttributes")), **_errors(*_AUTH_ERRORS)},
        description="An introspection endpoint: who the request is authenticated as; "
                    "{\"status\":\"ANONYMOUS\"} without credentials.",
        security=[{"basicAuth": []}, {}], operation_id="getUserAttributes")}
    p["/id/{pnfsid}"] = {"get": _op(
        "namespace", "Discover information about a file from the PNFS-ID.",
        {**_ok(schema=_ref("JsonFileAttributes")), **_errors(*_AUTH_ERRORS, 403, 404, e403="Not an admin")},
        parameters=[_path("pnfsid", "The PNFS-ID of a file or directory.")],
        description="Admins only (the admin role asserted): every attribute plus the path and name.",
        operation_id="getAttributesById")}
    p["/namespace/{path}"] = {
        "get": _op("namespace", "Find metadata and optionally directory contents.",
                   {**_ok(schema=_ref("JsonFileAttributes")), **_errors(*_AUTH_ERRORS, 403, 404, 414)},
                   parameters=[_NS_PATH, *_NS_FLAGS], operation_id="getFileAttributes",
                   description="Unknown query parameters are ignored, as dCache's Jersey does."),
        "post": _op("namespace", "Modify a file or directory.",
                    {**_ok(201, _ref("Success")),
                     **_errors(*_AUTH_ERRORS, 403, 404, 409, *_JSON_BODY_ERRORS, 414, 507,
                               e409="Already exists, or no such attribute")},
                    parameters=[_NS_PATH, _body(_ref("NamespaceAction"), "A JSON object with an 'action'.")],
                    consumes=[JSON], operation_id="cmrResources",
                    description="Every action answers 201 {\"status\":\"success\"}."),
        "delete": _op("namespace", "Delete a file or directory.",
                      {**_ok(200, _ref("Success")),
                       **_errors(*_AUTH_ERRORS, 403, 404, 414, e400="Bad request, or a non-empty directory")},
                      parameters=[_NS_PATH], operation_id="deleteFileEntry"),
    }
    kind = {"name": "type", "in": "path", "required": True, "type": "string", "enum": ["file", "directory"],
            "description": "The kind of object to query."}
    p["/qos-management/qos/{type}"] = {"get": _op(
        "qos", "List the available quality of services for a specific object type.",
        {**_ok(schema=_ref("QosList")), **_errors(*_AUTH_ERRORS, 404)}, parameters=[kind],
        operation_id="getQosList")}
    for obj in ("file", "directory"):
        p[f"/qos-management/qos/{obj}/{{qos}}"] = {"get": _op(
            "qos", f"Provide information about a specific {obj} quality of service.",
            {**_ok(schema=_ref("BackendCapabilityResponse")), **_errors(*_AUTH_ERRORS, 404)},
            parameters=[_path("qos", f"The {obj} quality of service to query: one of {', '.join(QOS_NAMES)}.")],
            operation_id=f"getQueriedQosFor{obj.capitalize()}")}
    p["/qos-management/namespace/{path}"] = {"get": _op(
        "qos", "Deprecated: use GET /namespace/{path}?qos=true and the 'qos' action.",
        _errors(400, e400="Always: the resource is deprecated"), parameters=[_NS_PATH],
        operation_id="getQosStatus", deprecated=True, security=[{"basicAuth": []}, {}])}

    p["/bulk-requests"] = {
        "get": _op("bulk-requests", "Get the summary info of the caller's current bulk requests (an admin's: "
                                    "everyone's).",
                   {**_ok(schema={"type": "array", "items": _ref("BulkRequestSummary")}), **_errors(*_AUTH_ERRORS)},
                   parameters=[
                       _query("status", "string", "A comma-separated list of QUEUED, STARTED, COMPLETED, "
                                                  "CANCELLING, CANCELLED (any case)."),
                       _query("path", "string", "Only requests with a target under this path.")],
                   operation_id="getRequests"),
        "post": _op("bulk-requests", "Submit a bulk request.",
                    {**_ok(201, description="Created; the body is empty", headers=_REQUEST_URL),
                     **_errors(*_AUTH_ERRORS, *_JSON_BODY_ERRORS, 429,
                               e429=f"More than {MAX_UNFINISHED_PER_USER} unfinished requests")},
                    parameters=[_body(_ref("BulkRequest"), "Description of the request.")], consumes=[JSON],
                    operation_id="submit"),
    }
    p["/bulk-requests/archived"] = {"get": _op(
        "bulk-requests", "List archived bulk requests (everyone's, as in dCache).",
        {**_ok(schema={"type": "array", "items": _ref("BulkArchivedSummaryInfo")}), **_errors(*_AUTH_ERRORS)},
        parameters=[
            _query("before", "string", "A datetime formatted as yyyy/MM/dd-HH:mm:ss (server time zone)."),
            _query("after", "string", "A datetime formatted as yyyy/MM/dd-HH:mm:ss (server time zone)."),
            _query("activity", "string", "A comma-separated list of activities."),
            _query("status", "string", "A comma-separated list of COMPLETED, CANCELLED."),
            _query("owner", "string", "A comma-separated list of owners (uid)."),
            _query("limit", "integer", "Max number of entries.", default=5000, minimum=1, maximum=100_000)],
        operation_id="getArchivedBulkRequests")}
    p["/bulk-requests/archived/{id}"] = {"get": _op(
        "bulk-requests", "Get the information for a bulk request which has been archived.",
        {**_ok(schema=_ref("BulkArchivedRequestInfo")), **_errors(*_AUTH_ERRORS, 403, 404)},
        parameters=[_BULK_ID], operation_id="getArchivedRequestInfo")}
    p["/bulk-requests/{id}"] = {
        "get": _op("bulk-requests", "Get the status information for an individual bulk request.",
                   {**_ok(schema=_ref("BulkRequestInfo")), **_errors(*_AUTH_ERRORS, 403, 404)},
                   parameters=[_BULK_ID, _query("offset", "integer", "Offset into the target list (pages of "
                                                                     "10,000).", default=0, minimum=0,
                                                maximum=MAX_OFFSET)],
                   operation_id="getBulkRequestStatus"),
        "patch": _op("bulk-requests", "Take some action on a bulk request (cancel).",
                     {**_ok(200, description="Successful; the body is empty"),
                      **_errors(*_AUTH_ERRORS, 403, 404, *_JSON_BODY_ERRORS)},
                     parameters=[_BULK_ID, _body(_ref("BulkAction"), "The action.")], consumes=[JSON],
                     operation_id="update"),
        "delete": _op("bulk-requests", "Clear all resources pertaining to the given bulk request id.",
                      {**_ok(204), **_errors(*_AUTH_ERRORS, 403, 404)},
                      parameters=[_BULK_ID, _query("cancelIfRunning", "boolean", "If the request is still being "
                                                                                 "processed, cancel it first.",
                                                   default=False)],
                      operation_id="clearRequest"),
    }

    p["/labels"] = {"get": _op(
        "labels", "List all labels on files the caller can see.",
        {**_ok(schema={"type": "object", "properties": {"labels": _STRINGS}}), **_errors(*_AUTH_ERRORS)},
        parameters=_LABEL_RANGE, operation_id="getLabels")}
    p["/labels/{path}"] = {"get": _op(
        "labels", "List a label's virtual directory: the files carrying it.",
        {**_ok(schema=_ref("JsonFileAttributes")), **_errors(*_AUTH_ERRORS, 404)},
        parameters=[_path("path", "The label."), *_NS_FLAGS[1:6], *_LABEL_RANGE],
        operation_id="getLabelledFiles")}

    group = _path("group", "The poolgroup to be described.")
    p["/poolgroups"] = {"get": _op(
        "poolmanager", "Get a list of poolgroups. Results sorted lexicographically by group name.",
        {**_ok(schema={"type": "array", "items": _ref("PoolGroup")}), **_errors(*_AUTH_ERRORS)},
        description="This service has one pool group, 'default' (linked by 'default-link'), holding its one pool.",
        operation_id="getPoolGroups")}
    p["/poolgroups/{group}"] = {"get": _op(
        "poolmanager", "Get information about a poolgroup.",
        {**_ok(schema=_ref("PoolGroup")), **_errors(*_AUTH_ERRORS, e400="Bad request, or no such pool group")},
        parameters=[group], operation_id="getPoolGroup")}
    p["/poolgroups/{group}/pools"] = {"get": _op(
        "poolmanager", "Get a list of pools that are a member of a poolgroup. Results sorted lexicographically "
                       "by pool name.",
        {**_ok(schema=_STRINGS), **_errors(*_AUTH_ERRORS, e400="Bad request, or no such pool group")},
        parameters=[group], description="The group ALL (any case) lists every pool.",
        operation_id="getPoolsOfGroup")}
    for part, summary, op_id, note in (
            ("usage", "Get usage metadata about a specific poolgroup.", "getGroupUsage",
             "cellDataForPools maps each pool to null: no cells are modelled."),
            ("queues", "Get pool activity information about pools of a specific poolgroup.", "getQueueInfo",
             "costDataForPools holds each pool's space only: mover queues are not modelled."),
            ("space", "Get space information about pools of a specific poolgroup.", "getSpaceInfo",
             "groupSpaceData: total, free, precious and removable bytes.")):
        p[f"/poolgroups/{{group}}/{part}"] = {"get": _op(
            "poolmanager", summary,
            {**_ok(schema=_ref("PoolGroupInfo")), **_errors(*_AUTH_ERRORS, e400="Bad request, or no such pool group")},
            parameters=[group], description=note, operation_id=op_id)}
    for part, summary, op_id in (
            ("queues", "Get aggregated pool activity histogram information from pools in a specific poolgroup.",
             "getQueueHistograms"),
            ("files", "Get aggregated file statistics histogram information from pools in a specific poolgroup.",
             "getFilesHistograms")):
        p[f"/poolgroups/{{group}}/histograms/{part}"] = {"get": _op(
            "poolmanager", summary, {**_ok(schema=_ref("PoolGroupInfo")), **_errors(*_AUTH_ERRORS)},
            parameters=[group], description="Always {}: dCache's answer while it has no histograms for the group.",
            operation_id=op_id)}

    p["/tape/stage"] = {"post": _op(
        "tape", "Submit a STAGE request.",
        {**_ok(201, _ref("StageRequestId"), headers=_LOCATION),
         **_errors(*_AUTH_ERRORS, *_JSON_BODY_ERRORS, 429)},
        parameters=[_body(_ref("StageRequest"), "The files to stage.")], consumes=[JSON], operation_id="stage")}
    p["/tape/stage/{id}"] = {
        "get": _op("tape", "Get the status information for an individual stage request.",
                   {**_ok(schema=_ref("StageRequestInfo")), **_errors(*_AUTH_ERRORS, 403, 404)},
                   parameters=[_BULK_ID], operation_id="getStageInfo"),
        "delete": _op("tape", "Clear all resources pertaining to the given stage request id.",
                      {**_ok(200, description="Cleared (dCache's annotation says 204; it answers 200)"),
                       **_errors(*_AUTH_ERRORS, 403, 404)},
                      parameters=[_BULK_ID], operation_id="clearStageRequest"),
    }
    p["/tape/stage/{id}/cancel"] = {"post": _op(
        "tape", "Cancel a STAGE request (some or all of its files).",
        {**_ok(200, description="Cancelled; the body is empty"),
         **_errors(*_AUTH_ERRORS, 403, 404, *_JSON_BODY_ERRORS,
                   e400="Bad request; a path not in the request is answered with title/detail headers")},
        parameters=[_BULK_ID, _body(_ref("Paths"), "The paths of the request to cancel.")], consumes=[JSON],
        operation_id="cancel")}
    p["/tape/release/{id}"] = {"post": _op(
        "tape", "RELEASE files associated with a STAGE request.",
        {**_ok(200, description="Submitted; the body is empty"),
         **_errors(*_AUTH_ERRORS, 403, 404, *_JSON_BODY_ERRORS, 429)},
        parameters=[_BULK_ID, _body(_ref("Paths"), "The paths to release.")], consumes=[JSON],
        operation_id="release")}
    p["/tape/archiveinfo"] = {"post": _op(
        "tape", "Return the file locality information for a list of file paths (at most 1000 are answered).",
        {**_ok(200, {"type": "array", "items": _ref("ArchiveInfo")},
               description="One entry per path (dCache's annotation says 201; it answers 200)"),
         **_errors(*_AUTH_ERRORS, *_JSON_BODY_ERRORS)},
        parameters=[_body(_ref("Paths"), "The paths to look up.")], consumes=[JSON], operation_id="getArchiveInfo")}

    p["/events"] = {"get": _op(
        "events", "Obtain general information about event support in dCache.",
        {**_ok(schema=_ref("EventsMetadata")), **_errors(*_AUTH_ERRORS)}, operation_id="getEventsMetadata")}
    p["/events/eventTypes"] = {"get": _op(
        "events", "Obtain a list of the available event types.",
        {**_ok(schema=_STRINGS), **_errors(*_AUTH_ERRORS)}, operation_id="getEventTypes")}
    p["/events/eventTypes/{type}"] = {"get": _op(
        "events", "Obtain non-schema information about a specific event type.",
        {**_ok(schema=_ref("EventStreamMetadata")), **_errors(*_AUTH_ERRORS, 404)}, parameters=[_EVENT_TYPE],
        operation_id="getEventType")}
    for part, what in (("selector", "selectors"), ("event", "events")):
        p[f"/events/eventTypes/{{type}}/{part}"] = {"get": _op(
            "events", f"Obtain the JSON schema for this event type's {what}.",
            {**_ok(schema={"type": "object"}), **_errors(*_AUTH_ERRORS, 404)}, parameters=[_EVENT_TYPE],
            operation_id=f"get{part.capitalize()}Schema")}
    p["/events/channels"] = {
        "get": _op("events", "Obtain a list of the caller's channels (their URLs).",
                   {**_ok(schema=_STRINGS), **_errors(*_AUTH_ERRORS)},
                   parameters=[_query("client-id", "string", "Limit channels by client-id (empty: channels "
                                                             "without one).")],
                   operation_id="getChannels"),
        "post": _op("events", "Request a new channel.",
                    {**_ok(201, description="Created; the body is empty", headers=_LOCATION),
                     **_errors(*_AUTH_ERRORS, *_JSON_BODY_ERRORS, 429, e429="Too Many Channels")},
                    parameters=[_body(_ref("NewChannel"), "Optional: a client-id.", required=False)],
                    consumes=[JSON], operation_id="register"),
    }
    p["/events/channels/{id}"] = {
        "get": _op("events", "Receive events for this channel (Accept: text/event-stream), or its metadata.",
                   {**_ok(schema=_ref("ChannelMetadata"),
                          description="JSON metadata, or with Accept: text/event-stream the SSE stream"),
                    **_errors(*_AUTH_ERRORS, 403, 404, 406)},
                   parameters=[_CHANNEL_ID, {
                       "name": "Last-Event-ID", "in": "header", "required": False, "type": "string",
                       "pattern": "^[0-9]{1,18}$",
                       "description": "The ID of the last event processed: events after it are replayed "
                                      "(SSE only)."}],
                   produces=[JSON, SSE], operation_id="channelMetadata"),
        "patch": _op("events", "Modify a channel (its disconnect timeout).",
                     {**_ok(204), **_errors(*_AUTH_ERRORS, 403, 404, *_JSON_BODY_ERRORS)},
                     parameters=[_CHANNEL_ID, _body(_ref("ChannelModification"), "The new timeout in seconds.")],
                     consumes=[JSON], operation_id="modify"),
        "delete": _op("events", "Cancel a channel.", {**_ok(204), **_errors(*_AUTH_ERRORS, 403, 404)},
                      parameters=[_CHANNEL_ID], operation_id="deleteChannel"),
    }
    p["/events/channels/{id}/subscriptions"] = {"get": _op(
        "events", "Obtain a list of a channel's subscriptions (their URLs).",
        {**_ok(schema=_STRINGS), **_errors(*_AUTH_ERRORS, 403, 404)}, parameters=[_CHANNEL_ID],
        operation_id="getSubscriptions")}
    p["/events/channels/{id}/subscriptions/{type}"] = {"post": _op(
        "events", "Subscribe to events.",
        {**_ok(201, description="Created; the body is empty", headers=_LOCATION),
         "303": {"description": "Merged into the existing subscription of the same object", "headers": _LOCATION},
         **_errors(*_AUTH_ERRORS, 403, 404, *_JSON_BODY_ERRORS,
                   e400="Unknown event type, bad selector, not found, permission denied or failed condition")},
        parameters=[_CHANNEL_ID, _EVENT_TYPE, _body(_ref("Selector"), "The selector.")], consumes=[JSON],
        operation_id="subscribe")}
    sub_params = [_path("channel_id", "The ID of the channel."), _EVENT_TYPE,
                  _path("subscription_id", "The ID of the subscription.")]
    p["/events/channels/{channel_id}/subscriptions/{type}/{subscription_id}"] = {
        "get": _op("events", "Return the selector of this subscription.",
                   {**_ok(schema={"type": "object"}), **_errors(*_AUTH_ERRORS, 403, 404)}, parameters=sub_params,
                   operation_id="getSubscription"),
        "delete": _op("events", "Cancel a subscription.", {**_ok(204), **_errors(*_AUTH_ERRORS, 403, 404)},
                      parameters=sub_params, operation_id="deleteSubscription"),
    }
    return p


TAGS = [
    {"name": "bulk-requests", "description": "Processing of multiple file/path requests in bulk"},
    {"name": "events", "description": "Support for SSE clients receiving dCache events"},
    {"name": "identity", "description": "Information about users"},
    {"name": "labels", "description": "Creation of and listing of virtual directories"},
    {"name": "namespace", "description": "Files, directories and similar objects"},
    {"name": "poolmanager", "description": "Data placement and selection decisions"},
    {"name": "qos", "description": "Managing how data is stored and handled"},
    {"name": "tape", "description": "Support for the TAPE API (bulk)"},
]


def document() -> dict[str, Any]:
    """The Swagger 2.0 description (a fresh copy)."""
    return {
        "swagger": "2.0",
        "info": {
            "description": "User interaction with dCache: the subset of dCache's frontend REST interface that "
                           "the airflow-dcache bundled service implements.",
            "version": "v1.0.1",
            "title": "The dCache REST interface",
            "contact": {"name": "dCache support team", "email": "support@dCache.org"},
            "license": {"name": "Apache 2.0", "url": "http://www.apache.org/licenses/LICENSE-2.0"},
        },
        "basePath": "/api/v1",
        "tags": TAGS,
        "consumes": [JSON],
        "produces": [JSON],
        "paths": _paths(),
        "securityDefinitions": {"basicAuth": {"type": "basic",
                                              "description": "Username and password authentication."}},
        "definitions": DEFINITIONS,
        "externalDocs": {"description": "Wiki", "url": "https://github.com/dCache/dcache/wiki/Restful-API"},
    }


_TEXT = json.dumps(document())


def swagger_handler(auth: Authenticator) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The route's handler: anonymous access allowed; credentials, when sent, must be valid."""

    async def swagger_json(request: web.Request) -> web.Response:
        auth.authenticate(request)  # raises 401 for a wrong password, as dCache's AuthenticationHandler
        return web.Response(text=_TEXT, content_type="application/json")

    return swagger_json
