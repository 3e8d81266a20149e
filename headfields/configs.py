"""Configuration dataclasses to JSON and back (the command line's flags come from the same dataclasses through tyro:
:mod:`headfields.apps.commands.train`).

    text = json.dumps(config_to_dict(insta.cpu_config()), allow_nan=False)
    config = config_from_dict(json.loads(text), expected=InstaConfig)  # == insta.cpu_config()

**JSON.** Each dataclass becomes a dict with its class under ``"__class__"`` (``"module.QualName"``), so a field
typed ``NeusConfig`` that holds a subclass comes back as that subclass; tuples become lists, paths strings, and the
non-finite floats the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (read back as floats wherever the field's type
admits a float), so ``json.dumps(..., allow_nan=False)`` always works. Reading builds each dataclass through its
class (``__post_init__`` validates), lists become tuples (the configs are frozen and hashable), and:

- a ``"__class__"`` is looked up in :func:`config_classes`, a list of the classes known to be configurations
  (the library's, those a field names, and any a user registers with :func:`register_config`): reading a config
  file never imports a module it names, so it cannot run code; a library class that has moved module since the
  file was written is found by its qualified name (:func:`same_library_class`), so an old run folder still loads;
- a key that is no field (renamed or removed since) raises ValueError naming the class and the key, and so does
  a value of the wrong type (a string where an integer goes: the field and the type expected), so a command prints
  a bad file as one line of error rather than a traceback;
- a missing key takes the class default, so a config saved by an older version still loads; a field made with
  :func:`added_field` takes the value runs had before it existed instead (a switch whose default changed).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, Union

from .outputs import write_atomic

__all__ = [
    "CLASS_KEY",
    "added_field",
    "config_from_dict",
    "config_to_dict",
    "config_classes",
    "load_config",
    "register_config",
    "register_config_source",
    "same_library_class",
    "save_config",
]

CLASS_KEY = "__class__"  # the key of each dataclass's "module.QualName" in config_to_dict's output
LIBRARY = "headfields"  # the package whose dataclasses derived from a known configuration are known too
_REGISTERED: list[type] = []  # register_config's classes
_SOURCES: list[Callable[[], Iterable[type]]] = []  # register_config_source's functions (headfields' own: its __init__)
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_NoneType = type(None)
_ABSENT = "headfields.absent"  # added_field's metadata key: the value a config file without the field was trained with


# ----------------------------------------------------------------------------------------------------------- JSON


def added_field(default: Any, *, before: Any) -> Any:
    """A dataclass field added to a configuration after runs were saved without it: new configs take ``default``,
    a file that lacks the field (written before it existed) ``before``, the value those runs were trained with.

        teeth: bool | None = added_field(None, before=False)  # None: decided by the model; old runs had none
    """
    return dataclasses.field(default=default, metadata={_ABSENT: before})


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of the dataclass instance ``config``, recursively (see the module docstring).

    json.dumps(config_to_dict(TrainingConfig(eval_every=250)), allow_nan=False)
    """
    if not _is_instance(config):
        raise TypeError(f"config: expected a dataclass instance, got {config!r}")
    return _encode(config, type(config).__qualname__)


def config_from_dict(data: Mapping[str, Any], expected: type | None = None) -> Any:
    """The dataclass instance ``data`` (a :func:`config_to_dict` dict, possibly through JSON) describes; with
    ``expected``, it must be that class or a subclass (and ``data`` may leave out its ``"__class__"``).

        config = config_from_dict(json.loads(text), expected=InstaConfig)
    """
    if expected is not None and not (isinstance(expected, type) and dataclasses.is_dataclass(expected)):
        raise TypeError(f"expected: expected a dataclass class or None, got {expected!r}")
    if not isinstance(data, Mapping):
        raise TypeError(f"data: expected a dict of a config's fields, got {type(data).__name__}")
    where = expected.__qualname__ if expected is not None else "config"
    return _decode_dataclass(data, (expected,) if expected is not None else (), where)


def save_config(path: str | Path, config: Any) -> Path:
    """Writes :func:`config_to_dict` of ``config`` to the JSON file ``path`` (indented); returns the path.

    save_config(out / "config.json", insta.cpu_config())
    """
    return write_atomic(path, json.dumps(config_to_dict(config), indent=2, allow_nan=False) + "\n")


def load_config(path: str | Path, expected: type | None = None) -> Any:
    """The config a :func:`save_config` file holds (``expected``: as in :func:`config_from_dict`).

    config = load_config(out / "config.json", expected=InstaConfig)
    """
    with open(path) as file:
        return config_from_dict(json.load(file), expected)


def _is_instance(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def same_library_class(old: str, new: str) -> bool:
    """Whether two ``"module.QualName"`` names are one class of the library that moved module in between (the
    packages are reorganised by job; a run folder written before still names the old module): the same name, or
    both in the library with the same class name."""
    if old == new:
        return True
    library = f"{LIBRARY}."
    return old.startswith(library) and new.startswith(library) and old.rsplit(".", 1)[-1] == new.rsplit(".", 1)[-1]


def _encode(value: Any, where: str) -> Any:
    if _is_instance(value):
        out: dict[str, Any] = {CLASS_KEY: _class_name(type(value))}
        for f in dataclasses.fields(value):
            if f.init:  # what the constructor takes is what rebuilds it
                out[f.name] = _encode(getattr(value, f.name), f"{where}.{f.name}")
        return out
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)  # numpy integers too
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, tuple | list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{where}: expected string keys (JSON's), got {key!r}")
        return {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise TypeError(
        f"{where}: expected a dataclass, number, string, bool, None, tuple, list, dict or path, got {type(value).__name__}"
    )


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of ``cls``'s fields (Any where one cannot be resolved)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a name only imported under TYPE_CHECKING: resolve what can be, the rest is Any
        return {f.name: (Any if isinstance(f.type, str) else f.type) for f in dataclasses.fields(cls)}


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _dataclass_options(tp: Any) -> tuple[type, ...]:
    """The dataclass classes a type admits (``A``, ``A | None``, ``A | B``)."""
    options = typing.get_args(tp) if _is_union(tp) else (tp,)
    return tuple(t for t in options if isinstance(t, type) and dataclasses.is_dataclass(t))


def register_config(cls: type) -> type:
    """Let config files name ``cls``, a dataclass of your own (a recipe's subclass, a model's configuration), with
    the dataclasses its fields name; returns ``cls``, so it works as a decorator::

        @register_config
        @dataclass(frozen=True)
        class MyInstaConfig(InstaConfig):
            extra_layers: int = 2
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"cls: expected a dataclass, got {cls!r}")
    if cls not in _REGISTERED:
        _REGISTERED.append(cls)
    return cls


def register_config_source(source: Callable[[], Iterable[type]]) -> Callable[[], Iterable[type]]:
    """Let config files name the classes ``source()`` returns, with the dataclasses their fields name; ``source`` is
    called each time :func:`config_classes` is, so it may import them then. Returns ``source``. The library's own
    (:class:`~headfields.apps.runs.RunConfig` and every registered model's recipe classes) come from the source that
    ``headfields/__init__.py`` registers: this module knows no model, the runs and the models import it.

        register_config_source(lambda: [MyConfig, *MY_RECIPES])
    """
    if not callable(source):
        raise TypeError(f"source: expected a function returning configuration classes, got {source!r}")
    if source not in _SOURCES:
        _SOURCES.append(source)
    return source


def config_classes(roots: Iterable[type] = ()) -> dict[str, type]:
    """The classes a config file may name, by ``"module.QualName"``: the library's configurations
    (:class:`~headfields.apps.runs.RunConfig` and every registered model's recipe classes, from
    :func:`register_config_source`'s sources), ``roots``, the classes given to :func:`register_config`, and from
    each of these the dataclasses its fields' annotations name and the library's dataclasses it derives from or that
    derive from it. No module a config names is imported: only the library's own, by its source."""
    todo = [*_REGISTERED, *roots]
    for source in _SOURCES:
        todo += source()
    found: dict[str, type] = {}
    while todo:
        cls = todo.pop()
        if _class_name(cls) in found:
            continue
        found[_class_name(cls)] = cls
        for hint in _hints(cls).values():
            todo += _dataclasses_named(hint)
        related = [*cls.__bases__, *cls.__subclasses__()]  # a recipe's base class, and the library's variants of it
        todo += [c for c in related if dataclasses.is_dataclass(c) and c.__module__.split(".")[0] == LIBRARY]
    return found


def _dataclasses_named(hint: Any) -> list[type]:
    """The dataclasses a type annotation names, at any depth (``A``, ``A | None``, ``tuple[A, ...]``)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return [hint]
    return [cls for arg in typing.get_args(hint) for cls in _dataclasses_named(arg)]


def _resolve_class(name: Any, candidates: tuple[type, ...], where: str) -> type:
    """The class a ``"__class__"`` names: one of ``candidates`` itself, or one of :func:`config_classes` (and then
    a subclass of a candidate, if any)."""
    if not isinstance(name, str):
        raise ValueError(f"{where}: expected {CLASS_KEY!r} to be a 'module.QualName' string, got {name!r}")
    for cls in candidates:
        if name == _class_name(cls):
            return cls  # the annotated class: nothing to look up
    known = config_classes(candidates)
    cls = known.get(name)
    if cls is None:  # a library class the file names by the module it had then
        moved = {c for known_name, c in known.items() if same_library_class(name, known_name)}
        cls = moved.pop() if len(moved) == 1 else None
    if cls is None:
        raise ValueError(
            f"{where}: refusing {CLASS_KEY} {name!r}: not a configuration class headfields knows (the library's "
            "recipes and their parts; a class of your own: headfields.configs.register_config)"
        )
    if candidates and not issubclass(cls, candidates):
        expected = " or ".join(c.__qualname__ for c in candidates)
        raise ValueError(f"{where}: expected a {expected} (or a subclass), got {CLASS_KEY} {name!r}")
    return cls


def _decode_dataclass(data: Mapping[str, Any], candidates: tuple[type, ...], where: str) -> Any:
    if CLASS_KEY in data:
        cls = _resolve_class(data[CLASS_KEY], candidates, where)
    elif len(candidates) == 1:
        cls = candidates[0]
    else:
        options = " or ".join(c.__qualname__ for c in candidates) or "the config's class"
        raise ValueError(f"{where}: expected a {CLASS_KEY!r} key naming {options}, got keys {sorted(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key == CLASS_KEY:
            continue
        if key not in fields:
            raise ValueError(f"{where}: {cls.__qualname__} has no field {key!r} (its fields: {', '.join(fields)})")
        kwargs[key] = _decode(value, hints.get(key, Any), f"{where}.{key}")
    for name, f in fields.items():  # missing keys take the defaults, but a required field has none
        if name not in kwargs and _ABSENT in f.metadata:  # a file older than the field: the value it was trained with
            kwargs[name] = f.metadata[_ABSENT]
        elif name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}: {cls.__qualname__} needs field {name!r} (it has no default)")
    return _construct(cls, kwargs, where)


def _construct(cls: type, kwargs: dict[str, Any], where: str) -> Any:
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:  # a __post_init__'s check of the file's value: bad input, not a bug
        named = where if where == cls.__qualname__ else f"{where} ({cls.__qualname__})"
        raise ValueError(f"{named}: {error}") from error


def _type_name(tp: Any) -> str:
    if tp is _NoneType:
        return "None"
    if _is_union(tp):
        return " | ".join(_type_name(t) for t in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    args = typing.get_args(tp)
    if args:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{_type_name(typing.get_origin(tp))}[{inner}]"
    return getattr(tp, "__qualname__", None) or str(tp).replace("typing.", "")


def _decode(value: Any, tp: Any, where: str) -> Any:
    """``value`` (JSON-decoded) as the type ``tp``: lists to tuples, dicts to dataclasses, "inf" to floats."""
    if tp is Any or tp is object or isinstance(tp, str | typing.TypeVar):
        return _decode_untyped(value, where)
    if _is_union(tp):
        options = typing.get_args(tp)
        if value is None:
            if _NoneType in options:
                return None
            raise ValueError(f"{where}: expected {_type_name(tp)}, got None")
        if isinstance(value, Mapping) and _dataclass_options(tp):
            return _decode_dataclass(value, _dataclass_options(tp), where)
        for exact in (bool, str, int, float):  # a value of one of the options as it is: "inf" stays a str
            if type(value) is exact and exact in options:
                return value
        for option in options:
            if option is not _NoneType:
                try:
                    return _decode(value, option, where)
                except ValueError:
                    continue
        raise ValueError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        raise ValueError(f"{where}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if tp is _NoneType:
        if value is not None:
            raise ValueError(f"{where}: expected None, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and value in _NON_FINITE:
            return _NON_FINITE[value]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number (or 'inf', '-inf', 'nan'), got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a path string, got {value!r}")
        return tp(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected an object of {tp.__qualname__}'s fields, got {value!r}")
        return _decode_dataclass(value, (tp,), where)
    if origin in (tuple, list, set, frozenset, Sequence, Iterable):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list for {_type_name(tp)}, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ValueError(f"{where}: expected {len(args)} values for {_type_name(tp)}, got {len(value)}")
            return tuple(_decode(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_decode(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return list(items) if origin is list else (frozenset(items) if origin in (set, frozenset) else tuple(items))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected an object for {_type_name(tp)}, got {value!r}")
        key_type, value_type = args or (Any, Any)
        return {(int(k) if key_type is int else k): _decode(v, value_type, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    return _decode_untyped(value, where)  # a type JSON has no form for (a Callable, ...): as it reads


def _decode_untyped(value: Any, where: str) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_decode_untyped(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        if CLASS_KEY in value:
            return _decode_dataclass(value, (), where)
        return {k: _decode_untyped(v, f"{where}[{k!r}]") for k, v in value.items()}
    return value
