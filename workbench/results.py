"""The result protocol: what every probe, evaluation and comparison returns.

A result names its model (`model`, a spec string) and the parameters that produced it (`params`),
gives its rows (`to_frame()`) and its headline numbers (`summary()`) as DataFrames, draws itself
(`figure(**view)`, a plotly figure) and travels as strict JSON (`to_json()`, `from_json(text)`).
JSON, never pickle: any parser reads a saved result, and loading one runs no code from the file.

A document (format version 1) is one JSON object: `type` (the registered class name), `version`,
`module` (imported on load when the class is not registered yet), every dataclass field under its
own name as natural JSON (arrays as nested lists, DataFrames as lists of records, NaN and infinities
as null), and `schema`, which maps the JSON pointer of each value plain JSON cannot say (an array,
a frame, a tuple, a dataclass, a non-finite float, a nested result) to what restores it. Infinities
inside arrays and float columns come back as NaN; every other value comes back as it was written.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import pandas as pd

from .errors import InputError

FORMAT_VERSION = 1
RESERVED = ("type", "version", "module", "schema")
PACKAGES = ("workbench", "probes", "trainers")  # the only modules a document may have imported
REGISTRY: dict[str, type[Result]] = {}
R = TypeVar("R", bound="Result")


class ResultFormatError(InputError):
    """A text is not a result document this version can read."""


@runtime_checkable
class ResultProtocol(Protocol):
    """The interface every result offers; `isinstance(x, ResultProtocol)` checks it."""

    model: str
    params: dict[str, Any]

    def to_frame(self) -> pd.DataFrame: ...

    def summary(self) -> pd.DataFrame: ...

    def figure(self, **view: Any) -> Any: ...

    def to_json(self) -> str: ...

    @classmethod
    def from_json(cls, text: str) -> ResultProtocol: ...


class Result:
    """Base of the dataclass results: `to_json` / `from_json` for any field types the document
    format knows, and registration by class name, so `from_json` finds the class of a document.

    Fields declared with `compare=False` are caches (they are not part of the value) and are not
    written."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        known = REGISTRY.get(cls.__name__)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"Two result types are named {cls.__name__}: in {known.__module__} and {cls.__module__}.")
        REGISTRY[cls.__name__] = cls

    def to_json(self) -> str:
        """The result as a strict JSON document (no NaN or Infinity tokens)."""
        return dumps(self)

    @classmethod
    def from_json(cls: type[R], text: str | bytes) -> R:
        """The result a `to_json` document holds; a document of another type is refused."""
        result = from_json(text)
        if not isinstance(result, cls):
            raise ResultFormatError(f"The document holds a {type(result).__name__}, not a {cls.__name__}.")
        return result


# --------------------------------------------------------------------------- writing

def dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON of a result, or of any mix of results, frames, arrays and plain data (an export
    bundle: results become their documents, frames lists of records, non-finite numbers null)."""
    return json.dumps(_plain(value, "", None), ensure_ascii=False, allow_nan=False, indent=indent)


def pack(value: Any) -> dict[str, Any]:
    """Any value a document can hold (a result, or plain data around results, frames and arrays)
    as `{"value": ..., "schema": ...}`, which `unpack` restores exactly; what the result cache stores."""
    schema: dict[str, Any] = {}
    return {"value": _plain(value, "", schema), "schema": schema}


def _join(path: str, key: Any) -> str:
    """A JSON pointer one level down (RFC 6901 escaping)."""
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _mark(schema: dict | None, path: str, what: Any) -> None:
    if schema is not None:
        schema[path] = what


def _fields(obj: Any) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(obj) if f.compare]


def _document(result: Result) -> dict[str, Any]:
    cls = type(result)
    schema: dict[str, Any] = {}
    doc: dict[str, Any] = {"type": cls.__name__, "version": FORMAT_VERSION, "module": cls.__module__}
    for f in _fields(result):
        if f.name in RESERVED:
            raise TypeError(f"{cls.__name__}.{f.name}: the names {', '.join(RESERVED)} are reserved in a document.")
        doc[f.name] = _plain(getattr(result, f.name), _join("", f.name), schema)
    doc["schema"] = schema
    return doc


def _plain(value: Any, path: str, schema: dict | None) -> Any:
    """`value` as plain JSON data; what plain JSON loses is noted in `schema` (None: not noted)."""
    if isinstance(value, Result):
        _mark(schema, path, "result")
        return _document(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isfinite(value):
            return value
        _mark(schema, path, "nan" if math.isnan(value) else "inf" if value > 0 else "-inf")
        return None
    if isinstance(value, np.ndarray):
        return _array(value, path, schema)
    if isinstance(value, pd.DataFrame):
        return _frame(value, path, schema)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _mark(schema, path, {"dataclass": f"{type(value).__module__}:{type(value).__qualname__}"})
        return {f.name: _plain(getattr(value, f.name), _join(path, f.name), schema) for f in _fields(value)}
    if isinstance(value, (list, tuple)):
        if isinstance(value, tuple):
            _mark(schema, path, "tuple")
        return [_plain(v, _join(path, i), schema) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: _plain(v, _join(path, k), schema) for k, v in value.items()}
        _mark(schema, path, "pairs")
        return [[_plain(k, _join(_join(path, i), 0), schema), _plain(v, _join(_join(path, i), 1), schema)]
                for i, (k, v) in enumerate(value.items())]
    raise TypeError(f"A {type(value).__name__} cannot go into a result document (at {path or '/'}).")


def _array(a: np.ndarray, path: str, schema: dict | None) -> Any:
    if a.dtype.kind not in "biufUO":
        raise TypeError(f"An array of {a.dtype} cannot go into a result document (at {path}).")
    _mark(schema, path, {"ndarray": str(a.dtype), "shape": list(a.shape)})
    if a.dtype.kind == "O":
        return _plain(a.tolist(), path, schema)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        return np.where(np.isfinite(a), a, None).tolist()
    return a.tolist()


def _frame(frame: pd.DataFrame, path: str, schema: dict | None) -> list[dict[str, Any]]:
    columns = list(frame.columns)
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise TypeError(f"A DataFrame in a result document needs unique string column names (at {path}).")
    spec: dict[str, Any] = {"frame": [str(d) for d in frame.dtypes], "columns": columns}
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        spec["index"] = _plain(frame.index.tolist(), path, None)
    _mark(schema, path, spec)
    floats = {c for c in columns if pd.api.types.is_float_dtype(frame[c].dtype)}
    values = {c: frame[c].tolist() for c in columns}
    return [{c: _cell(values[c][i], c in floats, _join(_join(path, i), c), schema) for c in columns}
            for i in range(len(frame))]


def _cell(value: Any, floating: bool, path: str, schema: dict | None) -> Any:
    if floating:  # the column's dtype brings NaN back: nothing to note
        return value if isinstance(value, float) and math.isfinite(value) else None
    return _plain(value, path, schema)


# --------------------------------------------------------------------------- reading

def _refuse(constant: str) -> None:
    raise ResultFormatError(f"The document holds {constant}, which strict JSON does not allow.")


def from_json(text: str | bytes) -> Result:
    """The result a `to_json` document holds, of whichever registered type it names."""
    try:
        doc = json.loads(text, parse_constant=_refuse)
    except json.JSONDecodeError as exc:
        raise ResultFormatError(f"Not a JSON document: {exc}.") from None
    return _from_document(doc)


def unpack(packed: Mapping[str, Any]) -> Any:
    """The value `pack` wrote."""
    if not isinstance(packed, Mapping) or "value" not in packed or not isinstance(packed.get("schema", {}), Mapping):
        raise ResultFormatError("Not a packed value: it needs 'value' and 'schema'.")
    return _restore(packed["value"], "", packed.get("schema") or {})


def _from_document(doc: Any) -> Result:
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str) or "version" not in doc:
        raise ResultFormatError("Not a workbench result: a result document has 'type' and 'version' fields.")
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ResultFormatError(f"Result format version {version!r} is not one this workbench reads "
                                f"(1 to {FORMAT_VERSION}).")
    name = doc["type"]
    cls = REGISTRY.get(name)
    if cls is None and isinstance(doc.get("module"), str):
        cls = _class(doc["module"], name)
    if not (isinstance(cls, type) and issubclass(cls, Result)):
        raise ResultFormatError(f"Unknown result type {name!r}.")
    schema = doc.get("schema") or {}
    fields = {k: _restore(v, _join("", k), schema) for k, v in doc.items() if k not in RESERVED}
    return _build(cls, fields)


def _class(module: str, qualname: str) -> type:
    if module.split(".")[0] not in PACKAGES:
        raise ResultFormatError(f"A result document may name classes of {', '.join(PACKAGES)} only, not {module!r}.")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        raise ResultFormatError(f"No class {qualname} in {module}: the document comes from another version.") from None
    if not (isinstance(found, type) and dataclasses.is_dataclass(found)):
        raise ResultFormatError(f"{module}:{qualname} is not a dataclass.")
    return found


def _build(cls: type, fields: dict[str, Any]) -> Any:
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ResultFormatError(f"The document's fields do not fit {cls.__name__} ({exc}): it comes from "
                                "another version.") from None


def _restore(value: Any, path: str, schema: Mapping[str, Any]) -> Any:
    """`value` read back: children first, then what `schema` says about this path."""
    what = schema.get(path)
    if what == "result":
        return _from_document(value)
    if isinstance(value, list):
        value = [_restore(v, _join(path, i), schema) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        value = {k: _restore(v, _join(path, k), schema) for k, v in value.items()}
    if what is None:
        return value
    if what in ("nan", "inf", "-inf"):
        return float(what)
    if what == "tuple":
        return tuple(value)
    if what == "pairs":
        return {k: v for k, v in value}
    if isinstance(what, dict) and "ndarray" in what:
        return _restore_array(value, np.dtype(what["ndarray"]), tuple(what["shape"]))
    if isinstance(what, dict) and "frame" in what:
        return _restore_frame(value, what)
    if isinstance(what, dict) and "dataclass" in what:
        module, _, qualname = str(what["dataclass"]).partition(":")
        return _build(_class(module, qualname), value)
    raise ResultFormatError(f"Unknown schema entry {what!r} at {path}.")


def _flatten(data: Any, depth: int) -> Iterator[Any]:
    if depth == 0:
        yield data
    else:
        for part in data:
            yield from _flatten(part, depth - 1)


def _restore_array(data: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.kind != "O":
        return np.array(data, dtype=dtype).reshape(shape)
    out = np.empty(math.prod(shape), dtype=object)
    for i, item in enumerate(_flatten(data, len(shape))):
        out[i] = item  # one by one: numpy would read list items as another dimension
    return out.reshape(shape)


def _restore_frame(records: list[dict[str, Any]], spec: Mapping[str, Any]) -> pd.DataFrame:
    columns = spec["columns"]
    if columns:
        frame = pd.DataFrame({c: pd.Series([row[c] for row in records], dtype=d)
                              for c, d in zip(columns, spec["frame"])})
    else:
        frame = pd.DataFrame(index=pd.RangeIndex(len(records)))
    if "index" in spec:
        frame.index = pd.Index(spec["index"])
    return frame
