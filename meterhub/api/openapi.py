"""The OpenAPI 3.0 document of ``/api/v1``, built from small helpers so paths and schemas stay in step."""

from __future__ import annotations

from typing import Any

VERSION = "1.0.0"
ID = {"type": "integer", "minimum": 1, "maximum": 2**62}
MONEY = {"type": "string", "pattern": r"^-?\d+\.\d{2}$", "example": "50.00"}
NUMBER = {"type": "string", "nullable": True, "description": "decimal quantity as a string"}
TS = {"type": "string", "format": "date-time", "nullable": True}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required if required is not None else list(props)}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _page(item: str) -> dict[str, Any]:
    return _obj({"data": {"type": "array", "items": _ref(item)}, "limit": {"type": "integer"},
                 "next_after": {"type": "integer", "nullable": True}})


#: Every operation may answer these (400: a NUL byte in a value or JSON nested too deep, refused before the view).
ERRORS = {str(code): {"$ref": f"#/components/responses/{name}"} for code, name in
          ((400, "BadRequest"), (401, "Unauthorized"), (404, "NotFound"), (422, "Invalid"), (429, "RateLimited"))}
PAGING = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
          {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 2**62}}]


def _param(name: str, where: str = "path", schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema or ID}


def _get(summary: str, schema: dict[str, Any], params: list[dict[str, Any]] | None = None,
         scope: str = "read") -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params or [], "security": [{"token": [scope]}],
                    "responses": {"200": _json(schema), **ERRORS}}}


def _schemas() -> dict[str, Any]:
    return {
        "Error": _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"},
                                      "fields": {"type": "object", "additionalProperties": {"type": "string"}}})}),
        "Property": _obj({"id": ID, "code": {"type": "string"}, "name": {"type": "string"},
                          "address": {"type": "string"}, "timezone": {"type": "string"}}),
        "Room": _obj({"id": ID, "property_id": ID, "building_id": ID, "floor_id": ID, "number": {"type": "string"},
                      "name": {"type": "string"}, "kind": {"type": "string"}, "area_m2": NUMBER}),
        "Meter": _obj({"id": ID, "property_id": ID, "device_id": ID, "room_id": {**ID, "nullable": True},
                       "channel": {"type": "integer"}, "utility": {"type": "string"}, "name": {"type": "string"},
                       "status": {"type": "string"}, "relay_closed": {"type": "boolean", "nullable": True},
                       "relay_desired": {"type": "boolean", "nullable": True}, "keep_power": {"type": "boolean"},
                       "last_seen_at": TS}),
        "Account": _obj({"id": ID, "property_id": ID, "room_id": {**ID, "nullable": True},
                         "number": {"type": "string"}, "customer_name": {"type": "string"},
                         "status": {"type": "string", "enum": ["preset", "open", "closed"]},
                         "balance": {**MONEY, "nullable": True},
                         "level": {"type": "string", "enum": ["normal", "alarm1", "alarm2", "arrears"]},
                         "alarm1": MONEY, "alarm2": MONEY, "overdraft_limit": MONEY, "opened_at": TS}),
        "Balance": _obj({"account_id": ID, "balance": MONEY, "currency": {"type": "string", "enum": ["CNY"]}}),
        "Transfer": _obj({"id": ID, "kind": {"type": "string"}, "amount": MONEY, "channel": {"type": "string"},
                          "receipt_no": {"type": "string", "nullable": True}, "created_at": TS,
                          "actor": {"type": "string"}}),
        "TopupRequest": _obj({"amount": {"type": "string", "pattern": r"^\d{1,8}(\.\d{1,2})?$", "example": "50.00"},
                              "channel": {"type": "string", "enum": ["cash", "card", "transfer", "online"]},
                              "confirm": {"type": "boolean", "description": "true to top up more than the "
                                          "group's confirmation threshold (422 without it)"}},
                             ["amount"]),
        "TopupResult": _obj({"transfer": _ref("Transfer"), "balance": MONEY, "replayed": {"type": "boolean"}}),
        "CommandRequest": _obj({"kind": {"type": "string", "enum": ["switch_on", "switch_off", "keep_power",
                                                                    "resume_prepaid", "read_now"]}}),
        "Command": _obj({"id": ID, "meter_id": ID, "kind": {"type": "string"}, "params": {"type": "object"},
                         "state": {"type": "string"}, "source": {"type": "string"}, "created_at": TS,
                         "error": {"type": "string", "description": "why it failed, in English"},
                         "error_code": {"type": "string", "nullable": True,
                                        "description": "why it failed, as a stable code (e.g. device.no_reply, "
                                                       "modbus.illegal_data_address)"}}),
        "Alarm": _obj({"id": ID, "property_id": ID, "kind": {"type": "string"}, "state": {"type": "string"},
                       "subject": {"type": "string"}, "meter_id": {**ID, "nullable": True},
                       "account_id": {**ID, "nullable": True}, "occurrences": {"type": "integer"},
                       "raised_at": TS, "cleared_at": TS}),
        "Latest": {"type": "object", "nullable": True, "properties": {
            "ts": TS, "quality": {"type": "integer"},
            "values": {"type": "object", "additionalProperties": {"type": "string", "nullable": True}}}},
        "Reading": _obj({"ts": TS, "quality": {"type": "integer"}, "source": {"type": "string", "nullable": True},
                         "values": {"type": "object", "additionalProperties": {"type": "string", "nullable": True}}}),
        "UsageRow": _obj({"bucket": TS, "energy_kwh": NUMBER, "water_m3": NUMBER, "readings": {"type": "integer"}}),
        "Report": _obj({"key": {"type": "string"}, "name": {"type": "string"}, "permission": {"type": "string"},
                        "columns": {"type": "array", "items": {"type": "object"}}}),
        "ReportRows": _obj({"key": {"type": "string"}, "columns": {"type": "array", "items": {"type": "string"}},
                            "rows": {"type": "array", "items": {"type": "array", "items": {}}},
                            "truncated": {"type": "boolean"},
                            "source": {"type": "string", "enum": ["primary", "replica"]},
                            "data_as_of": {**TS, "nullable": True,
                                           "description": "read replica only: the last change it had replayed"}}),
    }


def _paths() -> dict[str, Any]:
    period = [_param("start", "query", {"type": "string", "format": "date-time"}),
              _param("end", "query", {"type": "string", "format": "date-time"})]
    meter_detail = {"allOf": [_ref("Meter"), _obj({"latest": _ref("Latest")})]}
    topup_post = {"summary": "Top up an account (idempotent: repeat with the same Idempotency-Key)",
                  "parameters": [_param("account_id"),
                                 {"name": "Idempotency-Key", "in": "header", "required": True,
                                  "schema": {"type": "string", "minLength": 1, "maxLength": 150}}],
                  "security": [{"token": ["topup"]}],
                  "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("TopupRequest")}}},
                  "responses": {"201": _json(_ref("TopupResult"), "Created"),
                                "200": _json(_ref("TopupResult"), "Replayed from the idempotency key"),
                                "409": {"$ref": "#/components/responses/Conflict"},
                                "400": {"$ref": "#/components/responses/BadRequest"},
                                "415": {"$ref": "#/components/responses/BadRequest"},
                                "403": {"$ref": "#/components/responses/Forbidden"}, **ERRORS}}
    command_post = {"summary": "Queue a relay or read command for a meter", "parameters": [_param("meter_id")],
                    "security": [{"token": ["commands"]}],
                    "requestBody": {"required": True,
                                    "content": {"application/json": {"schema": _ref("CommandRequest")}}},
                    "responses": {"202": _json(_ref("Command"), "Queued"),
                                  "400": {"$ref": "#/components/responses/BadRequest"},
                                  "415": {"$ref": "#/components/responses/BadRequest"},
                                  "403": {"$ref": "#/components/responses/Forbidden"}, **ERRORS}}
    filters = [_param(n, "query") for n in ("property_id", "building_id", "room_id", "meter_id")]
    report_q = [_param("key", "path", {"type": "string"}), _param("start", "query", {"type": "string", "format": "date"}),
                _param("end", "query", {"type": "string", "format": "date"}), *filters]
    return {
        "/properties": _get("List properties in scope", _page("Property"), PAGING),
        "/properties/{property_id}": _get("One property", _ref("Property"), [_param("property_id")]),
        "/rooms": _get("List rooms", _page("Room"), [*PAGING, _param("property_id", "query"),
                                                     _param("building_id", "query")]),
        "/rooms/{room_id}": _get("One room", _ref("Room"), [_param("room_id")]),
        "/meters": _get("List meters", _page("Meter"), [*PAGING, _param("room_id", "query"),
                                                        _param("property_id", "query")]),
        "/meters/{meter_id}": _get("One meter with its latest values", meter_detail, [_param("meter_id")]),
        "/meters/{meter_id}/readings": _get(
            "Raw readings of a meter", _obj({"meter_id": ID, "data": {"type": "array", "items": _ref("Reading")}}),
            [_param("meter_id"), *period, _param("limit", "query", {"type": "integer", "minimum": 1,
                                                                    "maximum": 10000})]),
        "/meters/{meter_id}/usage": _get(
            "Usage per hour, day or month", _obj({"meter_id": ID, "bucket": {"type": "string"},
                                                  "data": {"type": "array", "items": _ref("UsageRow")}}),
            [_param("meter_id"), *period, _param("bucket", "query", {"type": "string",
                                                                     "enum": ["hour", "day", "month"]})]),
        "/meters/{meter_id}/commands": {"post": command_post},
        "/commands/{command_id}": _get("One command and its state", _ref("Command"), [_param("command_id")]),
        "/accounts": _get("List prepaid accounts", _page("Account"),
                          [*PAGING, _param("room_id", "query"),
                           _param("status", "query", {"type": "string", "enum": ["preset", "open", "closed"]})]),
        "/accounts/{account_id}": _get("One account with its balance", _ref("Account"), [_param("account_id")]),
        "/accounts/{account_id}/balance": _get("An account's balance", _ref("Balance"), [_param("account_id")]),
        "/accounts/{account_id}/topups": {
            **_get("Top-ups, refunds and reversals of an account", _page("Transfer"),
                   [_param("account_id"), *PAGING]),
            "post": topup_post},
        "/alarms": _get("List alarms", _page("Alarm"), [*PAGING, _param("property_id", "query"),
                                                        _param("state", "query", {"type": "string", "enum": [
                                                            "active", "acknowledged", "cleared"]})]),
        "/reports": _get("Reports the token may run", _obj({"data": {"type": "array", "items": _ref("Report")}})),
        "/reports/{key}": _get("Run a report (at most 5000 rows)", _ref("ReportRows"), report_q),
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    def error(description: str) -> dict[str, Any]:
        return _json(_ref("Error"), description)

    return {
        "openapi": "3.0.3",
        "info": {"title": "meterhub API", "version": VERSION,
                 "description": "Prepaid electricity and water: properties, rooms, meters, accounts, top-ups, "
                                "commands, alarms and reports of one group. Authenticate with an API token "
                                "(`Authorization: Bearer mh_…`) created in the console; objects outside the "
                                "token's scope answer 404."},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
            "responses": {"Unauthorized": error("Missing, unknown, revoked or expired token"),
                          "NotFound": error("No such object in the token's scope"),
                          "Invalid": error("Invalid parameters"), "RateLimited": error("Too many requests"),
                          "Conflict": error("Idempotency key reused with other parameters, or refused"),
                          "BadRequest": error("Malformed request: a NUL byte in a value, JSON nested too deep"),
                          "Forbidden": error("The token lacks the scope")},
        },
        "security": [{"token": []}],
        "paths": _paths(),
    }
