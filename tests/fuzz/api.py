"""The center's device API through schemathesis: every operation of its OpenAPI schema, with inputs
generated from the schema (valid and invalid), sent with a valid device token, with none and with a
wrong one, to the real app (``opscenter.app.create_app``, in-process ASGI, a temporary SQLite DB).

The property: no 5xx, and every error response is the API's JSON error body
(``{"error": code, "message": text, "server_time": ...}``, docs/opscenter-api.md).

``make test`` runs ``test_fuzz.py::test_api`` (a fixed number of examples per operation, derandomized);
``python -m tests.fuzz api --seconds N`` keeps drawing fresh examples for N seconds.
"""
from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

SCHEMA_PATH = "/openapi.json"
WRONG_TOKEN = "not-a-device-token"


@dataclass
class Center:
    app: Any
    schema: Any  # schemathesis.openapi schema
    token: str  # a valid device token
    task_id: int  # a task of that device (so task status calls can hit a real one)
    revoked: str  # the token of a revoked device


def center_settings(folder: Path, db_url: str | None = None, **overrides: Any) -> Any:
    from opscenter.settings import Settings

    cats = folder / "categories" / "malware"
    cats.mkdir(parents=True, exist_ok=True)
    (cats / "domains").write_text("evil.example\n")
    return Settings.model_validate({
        "db": db_url or f"sqlite:///{folder / 'center.db'}",
        "categories": str(folder / "categories"),
        # No limiter in the way: the generated requests come much faster than boxes do.
        "checkin_rate": 0, "alarm_rate": 0, "activate_rate": 0,
        **overrides,
    })


@contextmanager
def running_center(db_url: str | None = None) -> Iterator[Center]:
    """The real app on a fresh database (SQLite unless ``db_url``), with one enrolled box (and one revoked)."""
    from opscenter import enroll, fleet
    from opscenter.app import create_app

    with tempfile.TemporaryDirectory(prefix="vcr-fuzz-center-") as tmp:
        app = create_app(center_settings(Path(tmp), db_url), sweep=False)
        db = app.state.db
        db.create_tables()

        def enrolled(contract: str, serial: str) -> dict[str, Any]:
            code = enroll.issue_code(db, contract, serial=serial).code
            return enroll.activate(db, code=code, serial=serial, hostname=serial, agent_version="0.1.0",
                                   client_ip="192.0.2.1", heartbeat_interval=60)

        box = enrolled("C-FUZZ-1", "SN-FUZZ-1")
        gone = enrolled("C-FUZZ-2", "SN-FUZZ-2")
        enroll.revoke(db, gone["device_id"])
        task_id = fleet.add_task(db, box["device_id"], "config", {"revision": 2})
        schema = device_schema(app)
        try:
            yield Center(app, schema, box["token"], task_id, gone["token"])
        finally:
            db.dispose()


def device_schema(app: Any) -> Any:
    """The device app's OpenAPI schema for schemathesis, calls going to ``app`` in-process. The app
    may not serve it (the center puts /openapi.json on the operator listener only): then it comes
    from ``app.openapi()``, the same document."""
    if getattr(app, "openapi_url", None) == SCHEMA_PATH:
        return schemathesis.openapi.from_asgi(SCHEMA_PATH, app)
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    return schema


def operations(schema: Any) -> list[Any]:
    ops = [result.ok() for result in schema.get_all_operations()]
    return sorted(ops, key=lambda op: op.label)


def device_operations(schema: Any) -> list[Any]:
    """The device API: every operation tagged ``device`` (and nothing else is left out silently)."""
    ops = operations(schema)
    device = [op for op in ops if "device" in (op.definition.raw.get("tags") or [])]
    assert device and len(device) == len(ops), [op.label for op in ops]
    return device


class ApiFailure(AssertionError):
    pass


def check_response(label: str, auth: str, case: Any, response: Any) -> None:
    """No server error; an error response is the API's JSON error body."""
    status = response.status_code
    where = f"{label} ({auth}): {case.method} {case.formatted_path} -> {status}"
    if status >= 500:
        raise ApiFailure(f"{where}: server error\nrequest: {_describe(case)}\nresponse: {response.text[:500]}")
    if status >= 400:
        ctype = response.headers.get("content-type", [""])
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        if not ctype.startswith("application/json"):
            raise ApiFailure(f"{where}: error response is {ctype!r}, not JSON\nrequest: {_describe(case)}")
        try:
            body = response.json()
        except ValueError:
            raise ApiFailure(f"{where}: error body does not parse as JSON: {response.text[:200]!r}") from None
        if not (isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("message"), str)
                and isinstance(body.get("server_time"), str)):
            raise ApiFailure(f"{where}: error body is not the API's error shape: {body!r}")
        if status == 401 and auth == "token":
            raise ApiFailure(f"{where}: a valid device token was refused: {body!r}")


def _describe(case: Any) -> str:
    return (f"path={case.path_parameters!r} query={case.query!r} headers={ {k: v for k, v in (case.headers or {}).items()} !r} "
            f"body={str(case.body)[:300]!r}")


def strategy(op: Any) -> Any:
    """Valid and invalid inputs for ``op``."""
    return st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))


AUTHS = ("token", "none", "wrong", "revoked")


def exercise(center: Center, op: Any, case: Any, data: Any) -> None:
    """Send ``case`` once per kind of credential; check every response."""
    if "task_id" in (case.path_parameters or {}) and data.draw(st.booleans(), label="real task"):
        case.path_parameters["task_id"] = center.task_id
    base_headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    for auth in AUTHS:
        headers = dict(base_headers)
        if auth == "token":
            headers["Authorization"] = f"Bearer {center.token}"
        elif auth == "wrong":
            headers["Authorization"] = f"Bearer {WRONG_TOKEN}"
        elif auth == "revoked":
            headers["Authorization"] = f"Bearer {center.revoked}"
        case.headers = headers
        response = case.call()
        check_response(op.label, auth, case, response)


def run_operation(center: Center, op: Any, *, max_examples: int, derandomize: bool) -> None:
    """One hypothesis run over ``op``; raises on the first (shrunk) failure."""

    @settings(max_examples=max_examples, derandomize=derandomize, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy(op), data=st.data())
    def test(case: Any, data: Any) -> None:
        exercise(center, op, case, data)

    test()


# -- requests outside the schema ---------------------------------------------------------------------
#
# What a broken or hostile client sends that the schema does not describe: any method on the API's
# paths and others, bodies that are not JSON or not what the content type says, odd headers.

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
CONTENT_TYPES = ("application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", "")


@st.composite
def raw_requests(draw: Any, paths: list[str]) -> dict[str, Any]:
    path = draw(st.one_of(st.sampled_from(paths), st.sampled_from(["/", "/api", "/api/v1/", "/api/v2/checkin",
                                                                   "/openapi.json", "/docs", "/tuf/x"]),
                          st.text(min_size=1, max_size=40).map(lambda t: "/api/v1/" + t)))
    path = path.replace("{task_id}", draw(st.sampled_from(["1", "-1", "0", "99999999999999999999999", "x", "1.5", ""])))
    body = draw(st.one_of(
        st.binary(max_size=200),
        st.from_type(type(None)).map(lambda _: b""),
        st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                     max_leaves=12).map(lambda v: __import__("json").dumps(v).encode()),
    ))
    headers = {"Content-Type": draw(st.sampled_from(CONTENT_TYPES))}
    auth = draw(st.sampled_from(["token", "none", "Bearer", "Bearer  ", "Basic Zm9vOmJhcg==", "bearer TOKEN", "Bearer \u00e9"]))
    if draw(st.booleans()):
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "identity", "br"]))
    return {"method": draw(st.sampled_from(METHODS)), "path": path, "body": body, "headers": headers, "auth": auth}


def send_raw(center: Center, client: Any, req: dict[str, Any]) -> None:
    headers = dict(req["headers"])
    auth = req["auth"]
    if auth == "token":
        headers["Authorization"] = f"Bearer {center.token}"
    elif auth == "bearer TOKEN":
        headers["Authorization"] = f"bearer {center.token}"
    elif auth != "none":
        headers["Authorization"] = auth.encode("utf-8").decode("latin-1")
    if not headers.get("Content-Type"):
        headers.pop("Content-Type", None)
    from urllib.parse import quote

    url = quote(req["path"], safe="/?=&%{}")
    response = client.request(req["method"], url, data=req["body"], headers=headers)
    status = response.status_code
    where = f"raw {req['method']} {url!r} ({auth}, {headers.get('Content-Type')!r}) -> {status}"
    if status >= 500:
        raise ApiFailure(f"{where}: server error; body {req['body'][:200]!r}; response {response.text[:300]}")
    if status >= 400 and req["method"] != "HEAD":
        ctype = response.headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            raise ApiFailure(f"{where}: error response is {ctype!r}, not JSON: {response.text[:200]!r}")
        body = response.json()
        if not (isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("message"), str)):
            raise ApiFailure(f"{where}: error body is not the API's error shape: {body!r}")


def run_raw(center: Center, *, max_examples: int, derandomize: bool) -> None:
    from schemathesis.python import asgi

    paths = sorted({op.path for op in operations(center.schema)})
    with asgi.get_client(center.app) as client:

        @settings(max_examples=max_examples, derandomize=derandomize, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(req=raw_requests(paths))
        def test(req: dict[str, Any]) -> None:
            send_raw(center, client, req)

        test()


@contextmanager
def center_db(db: str) -> Iterator[str | None]:
    """``sqlite``: None (running_center's default); ``postgres``: a throwaway cluster's URL."""
    if db == "sqlite":
        yield None
        return
    from lab import pgtemp

    reason = pgtemp.unavailable_reason()
    if reason:
        raise RuntimeError(f"no PostgreSQL here: {reason}")
    with pgtemp.PgTemp(fsync=False) as pg:
        yield pg.url


def run_api(seconds: int | None = None, examples: int | None = None, db: str = "sqlite") -> int:
    """The long run: fresh examples round after round, every operation and raw requests, until
    ``seconds`` pass."""
    import logging

    logging.getLogger("vcr-opscenter").setLevel(logging.CRITICAL)  # the 500 handler logs; the check reports
    deadline = time.monotonic() + (seconds or 60)
    per_round = examples or 200
    rounds = 0
    with center_db(db) as url, running_center(url) as center:
        ops = device_operations(center.schema)
        print(f"api ({db}): {len(ops)} operations: {', '.join(op.label for op in ops)}, and raw requests")
        while time.monotonic() < deadline:
            for label, run in [(op.label, lambda op=op: run_operation(center, op, max_examples=per_round,
                                                                      derandomize=False)) for op in ops] + \
                    [("raw requests", lambda: run_raw(center, max_examples=per_round, derandomize=False))]:
                start = time.monotonic()
                try:
                    run()
                except ApiFailure as exc:
                    print(f"FAIL {exc}")
                    return 1
                print(f"  {label}: {per_round} examples in {time.monotonic() - start:.1f}s", flush=True)
                if time.monotonic() >= deadline:
                    break
            rounds += 1
    print(f"api ({db}): clean after {rounds} round(s)")
    return 0
