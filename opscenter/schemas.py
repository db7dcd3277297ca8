"""Request and reply bodies of the device API (docs/opscenter-api.md). Requests ignore unknown fields, so a
newer box can add some; the check-in keeps them (it is stored whole)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ErrorBody(BaseModel):
    error: str = Field(description="machine-readable code: bad_request, unauthorized, invalid_code, ...")
    message: str
    server_time: str


class TimeReply(BaseModel):
    server_time: str


class ActivateRequest(_In):
    serial: str = Field(min_length=1, max_length=128)
    activation_code: str = Field(min_length=4, max_length=64)
    agent_version: str = Field("", max_length=64)
    hostname: str = Field("", max_length=255)


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


class CheckinRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    sent_at: str | None = None
    agent_version: str | None = Field(None, max_length=64)
    config_revision: int | None = None
    signatures: dict[str, Any] = Field(default_factory=dict)
    health: dict[str, Any] = Field(default_factory=dict)
    engines: dict[str, Any] = Field(default_factory=dict)
    spool: dict[str, Any] = Field(default_factory=dict)
    portcheck: dict[str, Any] | None = None


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


class AlarmEvent(_In):
    event_id: str = Field(min_length=1, max_length=64, description="UUID assigned by the box's spool")
    severity: int | None = Field(None, ge=1, le=4, description="EVE alert severity, 1 high ... 4 info")
    event: dict[str, Any] = Field(description="the EVE record (or a gap event)")


class AlarmBatch(_In):
    events: list[AlarmEvent]


class AlarmReply(BaseModel):
    accepted: int
    duplicates: int
    server_time: str


class TaskStatusRequest(_In):
    status: Literal["received", "running", "done", "failed", "rejected",
                    # config revisions (issue 6): applying -> confirming -> applied, or failed / rolled_back
                    "applying", "confirming", "applied", "rolled_back"]
    detail: str = Field("", max_length=4000)


class BackupRequest(_In):
    revision: int = Field(ge=0)
    blob: str = Field(description="base64 of the backup, already encrypted by the box")


class BackupReply(BaseModel):
    contract_id: str
    revision: int
    size: int
    stored_at: str
