"""Request and reply bodies of the device API (docs/opscenter-api.md). Requests ignore unknown fields, so a
newer box can add some; the check-in keeps them (it is stored whole).

Everything a box sends that the operator's views read (serial, host name, versions, health, port
check, spool) is validated here, when it arrives: types are strict (no "3" for 3, no true for 1),
numbers are finite and in range of the columns that store them, and strings shown in tables are
plain text (:data:`opscenter.textsafe.PlainStr`). A mismatch is 422 ``invalid`` naming the field.
"""
from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from opscenter.textsafe import PlainStr

# Revisions and counters go into INTEGER columns (32-bit on PostgreSQL).
MAX_INT32 = 2**31 - 1
MAX_REVISION = MAX_INT32
MAX_ID = 2**63 - 1  # BIGINT ids (task ids)

Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Name = Annotated[PlainStr, Field(min_length=1, max_length=64)]


# What neither database stores: NUL characters (PostgreSQL text and jsonb refuse them) and lone
# surrogates (not UTF-8) in strings, NaN and infinite numbers (jsonb refuses them; JSON has none).
# A box's alarms quote attack traffic, NULs included: they are kept with U+FFFD in place of those
# characters (and null for such numbers) rather than refused (a 400 drops an alarm for good).
_UNSTORABLE = re.compile("[\\x00\\ud800-\\udfff]")


def _dirty(data: Any) -> bool:
    stack = [data]
    while stack:  # iterative: bodies may nest as deep as the JSON parser allows
        value = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                return True
        elif isinstance(value, float):
            if not math.isfinite(value):
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def storable(data: Any) -> Any:
    """``data`` (a parsed JSON body) as both databases can store it: itself when it is clean, else a
    copy with NUL characters and lone surrogates replaced by U+FFFD and non-finite numbers by None."""
    if not _dirty(data):
        return data
    root = [data]
    todo: list[tuple[Any, Any]] = [(root, 0)]
    while todo:
        parent, key = todo.pop()
        value = parent[key]
        if isinstance(value, str):
            parent[key] = _UNSTORABLE.sub("\ufffd", value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                parent[key] = None
        elif isinstance(value, dict):
            copy: dict[Any, Any] = {}
            for k, v in value.items():
                k = _UNSTORABLE.sub("\ufffd", k) if isinstance(k, str) else k
                copy[k] = v
                todo.append((copy, k))
            parent[key] = copy
        elif isinstance(value, list):
            parent[key] = items = list(value)
            todo.extend((items, i) for i in range(len(items)))
    return root[0]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Body(_In):
    """A whole request body of free-form data (alarms): made ``storable`` once, at the top."""

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return storable(data)


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code: bad_request, unauthorized, invalid_code, ...")
    message: str
    server_time: str
    field: str | None = Field(None, description="422 invalid: the first offending field (e.g. portcheck.results.0.proto)")


class TimeReply(BaseModel):
    server_time: str


class ActivateRequest(_In):
    serial: PlainStr = Field(min_length=1, max_length=128)
    activation_code: str = Field(min_length=4, max_length=64)
    agent_version: PlainStr = Field("", max_length=64)
    hostname: PlainStr = Field("", max_length=255)


class ProvisionRequest(_In):
    """``POST /api/v1/provision``: the box asks for its settings sheet (opscenter/sheets.py)."""

    serial: PlainStr = Field(min_length=1, max_length=64)
    activation_code: str | None = Field(None, min_length=4, max_length=64)


class License(BaseModel):
    term_start: str | None
    term_end: str | None


class Restore(BaseModel):
    revision: int
    blob: str = Field(description="base64 of the backup exactly as the box sent it (encrypted by the box)")
    created_at: str | None = None


class ActivateReply(BaseModel):
    device_id: str
    token: str = Field(description="the device credential: send it as `Authorization: Bearer <token>`")
    contract_id: str
    license: License
    heartbeat_interval: float
    server_time: str
    restore: Restore | None = Field(description="the contract's latest config backup, if any")
    backup_secret: str | None = Field(None, description="the contract's key material for the box's encrypted config "
                                                        "backups (same for every box of the contract)")
    tuf_root: str | None = Field(None, description="the signed-update repository's current root.json: the box's "
                                                   "trust anchor for signature bundles and releases")


class _Part(BaseModel):
    """A part of the check-in: the fields the center reads are typed; others are kept as sent."""

    model_config = ConfigDict(extra="allow", strict=True)


class Health(_Part):
    cpu_percent: Percent | None = None
    memory_percent: Percent | None = None
    disk_percent: Percent | None = None
    load: list[Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]] | None = Field(None, max_length=3)
    uptime_s: Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False)] | None = None
    interfaces: dict[Name, dict[Name, Count]] | None = Field(None, max_length=64)


class PortResult(_Part):
    """One port check result (agent/portcheck.py: check, target, ok, address, ms, error, detail; older or
    other boxes: feature / name, proto / protocol, port)."""

    ok: bool | None = None
    check: Annotated[PlainStr, Field(max_length=32)] | None = None
    feature: Annotated[PlainStr, Field(max_length=64)] | None = None
    name: Annotated[PlainStr, Field(max_length=64)] | None = None
    proto: Annotated[PlainStr, Field(max_length=16)] | None = None
    protocol: Annotated[PlainStr, Field(max_length=16)] | None = None
    port: Annotated[int, Field(ge=0, le=65535)] | None = None
    target: Annotated[str, Field(max_length=255)] | None = None
    address: Annotated[str, Field(max_length=255)] | None = None
    ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    error: Annotated[str, Field(max_length=255)] | None = None
    detail: Annotated[str, Field(max_length=2000)] | None = None


class PortCheck(_Part):
    checked_at: Annotated[PlainStr, Field(max_length=40)] | None = None
    ok: bool | None = None
    results: list[PortResult] | None = Field(None, max_length=256)


class Spool(_Part):
    pending: Annotated[int, Field(ge=0, le=MAX_INT32)] | None = None
    dropped: Count | None = None
    dropped_by_severity: dict[Annotated[str, Field(max_length=8)], Count] | None = Field(None, max_length=8)


class CheckinRequest(BaseModel):
    """The check-in body. Unknown top-level fields are kept (the body is stored whole)."""

    model_config = ConfigDict(extra="allow", strict=True)

    sent_at: Annotated[PlainStr, Field(max_length=40)] | None = None
    agent_version: Annotated[PlainStr, Field(max_length=64)] | None = None
    config_revision: Annotated[int, Field(ge=0, le=MAX_REVISION)] | None = None
    signatures: dict[Name, Annotated[PlainStr, Field(max_length=200)]] = Field(default_factory=dict, max_length=64)
    health: Health = Field(default_factory=Health)
    engines: dict[Name, dict[str, Any]] = Field(default_factory=dict, max_length=64)
    spool: Spool = Field(default_factory=Spool)
    portcheck: PortCheck | None = None

    @model_validator(mode="after")
    def _storable(self) -> "CheckinRequest":
        # The typed fields refuse such values already; the free-form rest (engines, unknown fields)
        # is stored whole, so it is held to the same rule.
        if _dirty(self.model_dump()):
            raise ValueError("NUL characters, lone surrogates and non-finite numbers cannot be stored")
        return self


class Desired(BaseModel):
    agent_version: str | None = Field(description="null: no change wanted")
    config_revision: int | None
    signatures: dict[str, Any]


class TaskOut(BaseModel):
    task_id: int
    kind: str
    params: dict[str, Any]


class CheckinReply(BaseModel):
    server_time: str
    next_checkin: float = Field(description="seconds until the next check-in (the box adds full jitter)")
    desired: Desired
    tasks: list[TaskOut]
    license: License
    sandbox: dict[str, Any] | None = Field(None, description="{'verdicts': {sha256: verdict}, 'window_s'}: sandbox "
                                            "verdicts that changed in the last window_s seconds (docs/sandbox.md)")
    antispam: dict[str, Any] | None = Field(None, description="{'known_digests': [sha256], 'window_s'}: spam digests "
                                             "boxes reported, listed in the last window_s seconds (docs/mail.md)")


class AlarmEvent(_In):
    event_id: str = Field(min_length=1, max_length=64, description="UUID assigned by the box's spool")
    severity: int | None = Field(None, ge=1, le=4, description="EVE alert severity, 1 high ... 4 info")
    event: dict[str, Any] = Field(description="the EVE record (or a gap event)")


class AlarmBatch(_Body):
    events: list[AlarmEvent]


class AlarmReply(BaseModel):
    accepted: int
    duplicates: int
    server_time: str


class TaskStatusRequest(_Body):
    status: Literal["received", "running", "done", "failed", "rejected",
                    # config revisions (issue 6): applying -> confirming -> applied, or failed / rolled_back
                    "applying", "confirming", "applied", "rolled_back"]
    detail: str = Field("", max_length=4000)


class BackupRequest(_In):
    revision: int = Field(ge=0, le=MAX_REVISION, strict=True,
                          description="a config revision the center sent to this box (a config task)")
    blob: str = Field(description="base64 of the backup, already encrypted by the box")


class BackupReply(BaseModel):
    contract_id: str
    revision: int
    size: int
    stored_at: str
