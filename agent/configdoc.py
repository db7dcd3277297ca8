"""The configuration reference (docs/configuration.md), generated from the pydantic schema.

``python -m agent.configdoc > docs/configuration.md`` walks ``agent.config.AgentConfig`` (nested
models, lists, maps, choices, defaults, bounds, descriptions) and, for ``engines``, each engine of
``filters.registry.ENGINES`` through its ``Config`` model. ``tests/agent/test_configdoc.py`` fails
when the committed file is stale.
"""
from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

COMMAND = "python -m agent.configdoc > docs/configuration.md"

Row = tuple[str, str, str, str]  # key, type, default, description


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _plain(tp: Any) -> Any:
    """``Annotated[X, validators...]`` -> X (the validators are not the type)."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _strip_none(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    tp = _plain(tp)
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = tuple(_plain(a) for a in args if a is not type(None))
        return (rest[0] if len(rest) == 1 else typing.Union[rest]), True  # type: ignore[return-value]
    return tp, False


def type_name(tp: Any) -> str:
    """A short, readable name of an annotation: ``list of str``, ``"open" or "closed"``."""
    tp, optional = _strip_none(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        out = " or ".join(json.dumps(a) for a in args)
    elif origin in (typing.Union, types.UnionType):
        out = " or ".join(type_name(a) for a in args)
    elif origin in (list, tuple, set, frozenset, typing.Sequence, Iterable):
        out = f"list of {type_name(args[0])}" if args else "list"
    elif origin in (dict, Mapping, typing.Mapping):
        out = f"map of {type_name(args[0])} to {type_name(args[1])}" if args else "map"
    elif _is_model(tp):
        out = "section"
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        out = " or ".join(json.dumps(m.value) for m in tp)
    elif tp is Any:
        out = "any"
    elif isinstance(tp, type):
        out = tp.__name__
    else:
        out = str(tp).replace("typing.", "")
    return f"{out} or none" if optional else out


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥"),
           ("max_length", "length ≤"), ("multiple_of", "multiple of"))


def constraints(info: FieldInfo) -> str:
    """``≥ 0, ≤ 65000`` from the field's annotated-types metadata."""
    out = []
    for item in info.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return ", ".join(out)


def _value(v: Any) -> str:
    if isinstance(v, enum.Enum):
        v = v.value
    if isinstance(v, BaseModel):
        v = v.model_dump(mode="json")
    if isinstance(v, (tuple, set, frozenset)):
        v = list(v)
    if isinstance(v, float) and v.is_integer():
        return f"`{v:g}`"
    if isinstance(v, str) and v:
        return f"`{v}`"
    return f"`{json.dumps(v, ensure_ascii=False, default=lambda x: getattr(x, 'value', str(x)))}`"


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        try:
            return _value(info.default_factory())  # type: ignore[call-arg]
        except TypeError:  # a factory that takes the validated data
            return "computed"
    if info.default is PydanticUndefined:
        return "required"
    if info.default is None:
        return "none"
    return _value(info.default)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _inner_model(tp: Any) -> tuple[Any, str] | None:
    """The model a field holds and how its keys are spelled below it: ``X`` -> (X, ""),
    ``list[X]`` -> (X, "[]"), ``dict[str, X]`` -> (X, ".NAME")."""
    tp, _ = _strip_none(tp)
    if _is_model(tp):
        return tp, ""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple, typing.Sequence) and args and _is_model(_plain(args[0])):
        return _plain(args[0]), "[]"
    if origin in (dict, Mapping, typing.Mapping) and len(args) == 2 and _is_model(_plain(args[1])):
        return _plain(args[1]), ".NAME"
    return None


def model_rows(model: type[BaseModel], prefix: str = "") -> Iterator[Row]:
    """One row per leaf field of ``model``, nested sections flattened to dotted keys."""
    for name, info in model.model_fields.items():
        yield from field_rows(f"{prefix}{info.alias or name}", info)


def field_rows(key: str, info: FieldInfo) -> Iterator[Row]:
    inner = _inner_model(info.annotation)
    if inner is None:
        bounds = constraints(info)
        typ = type_name(info.annotation) + (f" ({bounds})" if bounds else "")
        yield key, typ, default_text(info), info.description or ""
        return
    sub, spelling = inner
    optional = _strip_none(info.annotation)[1]
    if spelling or optional or info.is_required():
        # a list or map of sections, or a section that may be absent: a row of its own
        yield key, type_name(info.annotation), default_text(info), info.description or _doc(sub)
    yield from model_rows(sub, f"{key}{spelling}.")


def _doc(model: type) -> str:
    doc = (model.__doc__ or "").strip()
    if not doc or doc.startswith(("A base class", "Usage docs:")) or model.__doc__ == BaseModel.__doc__:
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def table(rows: Iterable[Row]) -> list[str]:
    out = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, typ, default, desc in rows:
        out.append(f"| `{key}` | {_cell(typ)} | {_cell(default)} | {_cell(desc)} |")
    return out


def _engines() -> list[tuple[type, bool | None]]:
    from filters.registry import ENGINES

    items = ENGINES.values() if isinstance(ENGINES, Mapping) else ENGINES
    out: list[tuple[type, bool | None]] = []
    for item in items:
        if isinstance(item, tuple):
            out.append((item[0], bool(item[1]) if len(item) > 1 else None))
        else:
            out.append((item, None))
    return out


def engine_section(cls: type, default_on: bool | None) -> list[str]:
    name = getattr(cls, "name", cls.__name__.lower())
    lines = [f"### `engines.{name}`", ""]
    intro = _doc(cls)
    if default_on is not None:
        intro = (intro + " " if intro else "") + ("On unless `enabled: false`." if default_on
                                                  else "Off unless `enabled: true`.")
    if intro:
        lines += [intro, ""]
    from filters.engine import Engine

    schema = getattr(cls, "Config", None)
    if _is_model(schema) and schema is not Engine.Config:  # the base model (enabled only): none of its own
        lines += table(model_rows(schema, f"engines.{name}."))
    else:
        lines.append(f"(no schema yet: the engine validates this section itself; see [engines.md](engines.md#{name}))")
    return lines + [""]


def render() -> str:
    from agent.config import PATH_KEYS, AgentConfig

    lines = [
        "# Configuration reference",
        "",
        "設定ファイルのリファレンス / The agent's configuration file, "
        "`/etc/vcr-agent/vcr-agent.yaml` (example: `config/vcr-agent.yaml`).",
        "",
        f"Generated from the pydantic schema (`agent/config.py` and each engine's `Config`) by `{COMMAND}`;",
        "do not edit by hand. Unknown keys are errors; `vcr-agent check-config -c FILE` validates a file",
        "without applying it. A relative path is taken relative to the config file's folder in these keys: "
        + ", ".join(f"`{'.'.join(k)}`" for k in PATH_KEYS) + ".",
        "",
    ]
    for name, info in AgentConfig.model_fields.items():
        key = info.alias or name
        lines += [f"## `{key}`", ""]
        inner = _inner_model(info.annotation)
        intro = info.description or (_doc(inner[0]) if inner else "")
        if intro:
            lines += [intro, ""]
        if key == "engines":
            lines += ["Each engine's own section, in pipeline order. `enabled` (true or false) is in every section.", ""]
            for cls, default_on in _engines():
                lines += engine_section(cls, default_on)
            continue
        if inner is not None and not inner[1]:  # a section: its fields, without a row of its own
            if _strip_none(info.annotation)[1]:
                lines += ["Optional: the section is absent by default.", ""]
            lines += table(model_rows(inner[0], f"{key}."))
        else:
            lines += table(field_rows(key, info))
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> int:
    import sys

    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
