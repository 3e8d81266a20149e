"""Configuration dataclasses to JSON and back, and command-line flags generated from them (tyro's idea, argparse only).

    text = json.dumps(config_to_dict(insta.cpu_config()), allow_nan=False)
    config = config_from_dict(json.loads(text), expected=InstaConfig)  # == insta.cpu_config()

    parser = argparse.ArgumentParser()
    add_config_flags(parser, insta.paper_config(), "insta", aliases={"optimization.learning_rate": "--lr"})
    args = parser.parse_args(["--insta.hash-grid.levels", "8", "--insta.background", "0", "0", "0"])
    config = config_from_flags(args, insta.paper_config(), "insta")

**JSON.** Each dataclass becomes a dict with its class under ``"__class__"`` (``"module.QualName"``), so a field
typed ``NeusConfig`` that holds a subclass comes back as that subclass; tuples become lists, paths strings, and the
non-finite floats the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (read back as floats wherever the field's type
admits a float), so ``json.dumps(..., allow_nan=False)`` always works. Reading builds each dataclass through its
class (``__post_init__`` validates), lists become tuples (the configs are frozen and hashable), and:

- a ``"__class__"`` is the field's annotated class (or ``expected``) itself, or a class imported from a
  ``headfields.*`` module: a config file cannot import arbitrary code;
- a key that is no field (renamed or removed since) raises ValueError naming the class and the key;
- a missing key takes the class default, so a config saved by an older version still loads.

**Flags.** :func:`add_config_flags` adds one flag per leaf field, ``--{prefix}.{field}.{subfield}`` with
underscores as dashes (``--insta.hash-grid.levels 8``; prefix ``""``: ``--hash-grid.levels 8``), each nested
dataclass in an argument group of its own, the help taken from the comments beside the field in the class source.
Values:

- int, float, str, Path: the word as Python reads it (``--training.max-minutes 2.5``, ``inf`` is a float);
- bool: ``--x true`` or ``--x false`` (also yes/no, on/off, 1/0); ``--x`` alone means true;
- ``X | None``: the word ``none`` gives None (so a string field cannot be set to the string "none");
- Literal: one of its values (argparse lists the choices);
- tuples of scalars: the values as separate words, ``--insta.background 0 0 0``; ``tuple[str, ...]`` takes any
  number, none at all for ``()``;
- anything else (tuples of tuples, dicts, unions of several types): a JSON value,
  ``--training.eval-regions '[["hair", [6]]]'``;
- a nested ``Config | None`` field has its own flag (``none``, or a JSON object of the class's fields, the
  missing ones at their defaults) besides those of its fields; a field flag given while the config holds None
  starts from the class's defaults.

A negative number in exponent notation, or ``-inf``, looks like an option to argparse: write ``--flag=-1e-5``.
A bool flag alone takes no value, so it should not stand right before a script's positional argument.

A flag not given keeps the base config's value (its argparse default is :data:`NOT_GIVEN`);
:func:`config_from_flags` applies those given with ``dataclasses.replace`` (so ``__post_init__`` validates, and
its errors name the flags).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import inspect
import io
import json
import math
import numbers
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal, Union

__all__ = [
    "CLASS_KEY",
    "NOT_GIVEN",
    "add_config_flags",
    "config_from_dict",
    "config_from_flags",
    "config_to_dict",
    "load_config",
    "save_config",
]

CLASS_KEY = "__class__"  # the key of each dataclass's "module.QualName" in config_to_dict's output
TRUSTED_PACKAGE = "headfields"  # config files may name classes of this package's modules only
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_NONE_WORD = "none"
_NoneType = type(None)


# ----------------------------------------------------------------------------------------------------------- JSON


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
    path = Path(path)
    path.write_text(json.dumps(config_to_dict(config), indent=2, allow_nan=False) + "\n")
    return path


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


def _resolve_class(name: Any, candidates: tuple[type, ...], where: str) -> type:
    """The class a ``"__class__"`` names: one of ``candidates`` itself, or one imported from the trusted package
    (and then a subclass of a candidate, if any)."""
    if not isinstance(name, str):
        raise ValueError(f"{where}: expected {CLASS_KEY!r} to be a 'module.QualName' string, got {name!r}")
    for cls in candidates:
        if name == _class_name(cls):
            return cls  # the annotated class: nothing to import
    if not (name.startswith(TRUSTED_PACKAGE + ".") and name.replace(".", "").replace("_", "").isalnum()):
        raise ValueError(
            f"{where}: refusing {CLASS_KEY} {name!r}: a config may name only classes of the {TRUSTED_PACKAGE} package "
            f"(a module named {TRUSTED_PACKAGE}.*)"
        )
    parts = name.split(".")
    cls: Any = None
    for i in range(len(parts) - 1, 0, -1):  # the longest importable module, then the qualified name in it
        try:
            module = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        cls = module
        for part in parts[i:]:
            cls = getattr(cls, part, None)
        break
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{where}: {CLASS_KEY} {name!r} names no dataclass")
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
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}: {cls.__qualname__} needs field {name!r} (it has no default)")
    return _construct(cls, kwargs, where)


def _construct(cls: type, kwargs: dict[str, Any], where: str) -> Any:
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise ValueError(f"{where} ({cls.__qualname__}): {error}") from error
    except TypeError as error:
        raise TypeError(f"{where} ({cls.__qualname__}): {error}") from error


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
            raise TypeError(f"{where}: expected {_type_name(tp)}, got None")
        if isinstance(value, Mapping) and _dataclass_options(tp):
            return _decode_dataclass(value, _dataclass_options(tp), where)
        for exact in (bool, str, int, float):  # a value of one of the options as it is: "inf" stays a str
            if type(value) is exact and exact in options:
                return value
        for option in options:
            if option is not _NoneType:
                try:
                    return _decode(value, option, where)
                except (TypeError, ValueError):
                    continue
        raise TypeError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        raise ValueError(f"{where}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if tp is _NoneType:
        if value is not None:
            raise TypeError(f"{where}: expected None, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and value in _NON_FINITE:
            return _NON_FINITE[value]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{where}: expected a number (or 'inf', '-inf', 'nan'), got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a path string, got {value!r}")
        return tp(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected an object of {tp.__qualname__}'s fields, got {value!r}")
        return _decode_dataclass(value, (tp,), where)
    if origin in (tuple, list, set, frozenset, Sequence, Iterable):
        if not isinstance(value, list | tuple):
            raise TypeError(f"{where}: expected a list for {_type_name(tp)}, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ValueError(f"{where}: expected {len(args)} values for {_type_name(tp)}, got {len(value)}")
            return tuple(_decode(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        items = [_decode(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return list(items) if origin is list else (frozenset(items) if origin in (set, frozenset) else tuple(items))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected an object for {_type_name(tp)}, got {value!r}")
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


# ---------------------------------------------------------------------------------------------------------- flags


class _NotGiven:
    """The default of every generated flag: the base config's value stays."""

    def __repr__(self) -> str:
        return "<not given>"


NOT_GIVEN = _NotGiven()  # every generated flag's default


@dataclasses.dataclass(frozen=True)
class _Kind:
    """How one field reads from the command line: ``convert`` takes argparse's string (or list of strings, with
    ``nargs``) and raises ValueError saying what was expected."""

    convert: Callable[[Any], Any]
    nargs: int | str | None = None
    metavar: str | tuple[str, ...] | None = None
    choices: tuple[str, ...] | None = None
    const: str | None = None


def _scalar(tp: Any) -> tuple[Callable[[str], Any], str | None, tuple[str, ...] | None] | None:
    """(string -> value, metavar, choices) of a scalar type, or None for any other type."""
    if tp is bool:
        return _parse_bool, "{true,false}", None
    if tp is int:
        return functools.partial(_parse_number, int, "an integer"), "INT", None
    if tp is float:
        return functools.partial(_parse_number, float, "a number"), "FLOAT", None
    if tp is str:
        return str, "STR", None
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return tp, "PATH", None
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        by_word = {str(c): c for c in choices}

        def literal(word: str) -> Any:
            if word not in by_word:
                raise ValueError(f"expected one of {', '.join(by_word)}, got {word!r}")
            return by_word[word]

        return literal, None, tuple(by_word)
    return None


def _parse_bool(word: str) -> bool:
    if word.lower() in _TRUE:
        return True
    if word.lower() in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {word!r}")


def _parse_number(kind: type, what: str, word: str) -> Any:
    try:
        return kind(word)
    except ValueError:
        raise ValueError(f"expected {what}, got {word!r}") from None


def _optional(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether None was an option)."""
    if _is_union(tp) and _NoneType in typing.get_args(tp):
        rest = tuple(t for t in typing.get_args(tp) if t is not _NoneType)
        return (rest[0] if len(rest) == 1 else Union[rest]), True  # noqa: UP007 (a runtime union of a tuple)
    return tp, False


def _kind(tp: Any, where: str) -> _Kind:
    inner, optional = _optional(tp)
    scalar = _scalar(inner)
    if scalar is not None:
        parse, metavar, choices = scalar

        def convert(word: str) -> Any:
            return None if optional and word.lower() == _NONE_WORD else parse(word)

        if choices is not None and optional:
            choices = (*choices, _NONE_WORD)
        if metavar is not None and optional:
            metavar = f"{metavar}|none"
        if inner is bool:  # ``--flag`` alone: true
            return _Kind(convert, nargs="?", metavar=metavar, const="true")
        return _Kind(convert, metavar=metavar, choices=choices)
    args = typing.get_args(inner)
    if typing.get_origin(inner) is tuple and args:
        variable = len(args) == 2 and args[1] is Ellipsis
        items = (args[0],) if variable else args
        parsers = [_scalar(t) for t in items]
        if all(p is not None for p in parsers):
            return _tuple_kind(parsers, variable, optional, len(args))
    return _json_kind(tp, optional, where)


def _tuple_kind(parsers: list, variable: bool, optional: bool, count: int) -> _Kind:
    """Tuples of scalars as separate words: ``--background 1 1 1``; ``tuple[X, ...]``: any number of them."""

    def convert(words: list[str]) -> Any:
        if optional and [w.lower() for w in words] == [_NONE_WORD]:
            return None
        if variable:
            return tuple(parsers[0][0](w) for w in words)
        if len(words) != count:
            raise ValueError(f"expected {count} values, got {len(words)}: {' '.join(words)}")
        return tuple(p[0](w) for p, w in zip(parsers, words, strict=True))

    names = tuple((p[1] or "{" + ",".join(p[2]) + "}") for p in parsers)
    if variable:
        return _Kind(convert, nargs="*", metavar=names[0])
    if optional:  # the fixed count is checked by convert: "+" lets a single "none" through
        return _Kind(convert, nargs="+", metavar=names[0])
    return _Kind(convert, nargs=count, metavar=names)


def _json_kind(tp: Any, optional: bool, where: str) -> _Kind:
    def convert(word: str) -> Any:
        if optional and word.lower() == _NONE_WORD:
            return None
        try:
            value = json.loads(word)
        except json.JSONDecodeError as error:
            raise ValueError(f"expected a JSON value of {_type_name(tp)}, got {word!r} ({error})") from None
        try:
            return _decode(value, tp, where)
        except (TypeError, ValueError) as error:
            raise ValueError(f"expected a JSON value of {_type_name(tp)}: {error}") from None

    return _Kind(convert, metavar="JSON|none" if optional else "JSON")


class _ConfigAction(argparse.Action):
    """Stores ``kind.convert(values)``; a value it cannot read is argparse's error, naming the flag."""

    def __init__(self, option_strings, dest, kind: _Kind, **kwargs):
        self.kind = kind
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            value = self.kind.convert(values)
        except (TypeError, ValueError) as error:
            raise argparse.ArgumentError(self, str(error)) from None
        setattr(namespace, self.dest, value)


def _dest(prefix: str, path: tuple[str, ...]) -> str:
    # "prefix:a.b": never one of a script's own dests, and unique per prefix
    return f"{prefix}:{'.'.join(path)}"


def _flag(prefix: str, path: tuple[str, ...]) -> str:
    return "--" + ".".join(p.replace("_", "-") for p in ((prefix,) if prefix else ()) + path)


def _default_instance(tp: Any) -> Any:
    """The defaults of the one dataclass a ``Config | None`` field admits (None where it has required fields)."""
    options = _dataclass_options(tp)
    if len(options) != 1:
        return None
    try:
        return options[0]()
    except (TypeError, ValueError):
        return None


def _nested(value: Any, tp: Any) -> Any:
    """The dataclass instance whose fields get flags of their own, or None for a leaf."""
    if _is_instance(value):
        return value
    if value is None:
        return _default_instance(tp)
    return None


def _show(value: Any) -> str:
    """A value as its flag is written."""
    if value is None:
        return _NONE_WORD
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple) and all(isinstance(v, bool | int | float | str | PurePath) for v in value):
        return " ".join(_show(v) for v in value) if value else "()"
    if isinstance(value, bool | int | float | str | PurePath):
        return str(value)
    return json.dumps(_strip_classes(_encode(value, "value")))


def _strip_classes(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_classes(v) for k, v in value.items() if k != CLASS_KEY}
    if isinstance(value, list):
        return [_strip_classes(v) for v in value]
    return value


def add_config_flags(
    parser_or_group: argparse.ArgumentParser | Any,
    config_instance: Any,
    prefix: str,
    aliases: Mapping[str, str | Sequence[str]] | None = None,
    exclude: Iterable[str] = (),
) -> None:
    """One flag per leaf field of ``config_instance`` (nested dataclasses recursed into), named
    ``--{prefix}.{field}.{subfield}`` with dashes for underscores; each nested config in an argument group titled
    by its flag prefix (given a group instead of a parser, every flag goes into it). ``aliases``: dotted field
    path -> extra option string(s); ``exclude``: dotted field paths (a nested config's excludes its fields) the
    script defines itself. Every flag defaults to "not given" (see :func:`config_from_flags`).

        add_config_flags(parser, TrainingConfig(), "training", aliases={"max_iterations": "--iterations"}, exclude={"seed"})
    """
    if not _is_instance(config_instance):
        raise TypeError(f"config_instance: expected a dataclass instance, got {config_instance!r}")
    if not isinstance(prefix, str) or any(c.isspace() for c in prefix) or prefix.startswith("-"):
        raise ValueError(f"prefix: expected a flag prefix such as 'insta' or '' (no spaces, no leading dash), got {prefix!r}")
    aliases = {_path_key(k): ([v] if isinstance(v, str) else list(v)) for k, v in (aliases or {}).items()}
    for name, options in aliases.items():
        if not options or not all(isinstance(o, str) and o.startswith("-") for o in options):
            raise ValueError(f"aliases: expected option strings such as '--iterations' for {name!r}, got {options!r}")
    excluded = {_path_key(e) for e in ([exclude] if isinstance(exclude, str) else exclude)}
    used: set[str] = set()
    blocks: list[tuple[str, str, list[tuple[list[str], dict[str, Any]]]]] = []  # (title, description, flags)

    def add(config: Any, path: tuple[str, ...], title: str, description: str) -> None:
        cls = type(config)
        hints, comments = _hints(cls), _field_comments(cls)
        flags: list[tuple[list[str], dict[str, Any]]] = []
        blocks.append((title, description, flags))
        nested_fields = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            sub = (*path, f.name)
            key = ".".join(sub)
            if key in excluded:
                used.add(key)
                continue
            tp, value = hints.get(f.name, Any), getattr(config, f.name)
            comment = comments.get(f.name, "")
            child = _nested(value, tp)
            if child is None or _optional(tp)[1]:  # a leaf, or a "Config | None" field's own flag
                help_text, shown = comment or _type_name(tp), _show(value)
                if child is not None:
                    whole = f"none, or a JSON object of {type(child).__qualname__}'s fields"
                    help_text = f"{comment}; {whole}" if comment else whole
                    shown = _NONE_WORD if value is None else f"{type(value).__qualname__}, its fields' flags below"
                kind = _kind(tp, _flag(prefix, sub))
                if key in aliases:
                    used.add(key)
                options = [_flag(prefix, sub), *aliases.get(key, ())]
                flags.append((options, dict(
                    dest=_dest(prefix, sub), action=_ConfigAction, kind=kind, default=NOT_GIVEN, nargs=kind.nargs,
                    const=kind.const, metavar=kind.metavar, choices=kind.choices,
                    help=f"{help_text} (default: {shown})".replace("%", "%%"),
                )))  # fmt: skip
            if child is not None:
                nested_fields.append((sub, child, comment))
        for sub, child, comment in nested_fields:  # after the leaves, so each group reads as one block
            add(child, sub, _flag(prefix, sub)[2:], f"{type(child).__qualname__}{': ' + comment if comment else ''}")

    add(config_instance, (), prefix or type(config_instance).__qualname__, _class_help(type(config_instance)))
    # Checked before anything is added: a typo leaves the parser as it was.
    if set(aliases) - used:
        raise ValueError(f"aliases: {sorted(set(aliases) - used)} name no leaf field of {type(config_instance).__qualname__}")
    if excluded - used:
        raise ValueError(f"exclude: {sorted(excluded - used)} name no field of {type(config_instance).__qualname__}")
    is_parser = isinstance(parser_or_group, argparse.ArgumentParser)
    for title, description, flags in blocks:
        if not flags:
            continue
        group = parser_or_group.add_argument_group(title, description.replace("%", "%%")) if is_parser else parser_or_group
        for options, kwargs in flags:
            group.add_argument(*options, **kwargs)


def _path_key(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"expected a dotted field path such as 'hash_grid.levels', got {name!r}")
    return name.replace("-", "_")


def config_from_flags(args: argparse.Namespace, config_instance: Any, prefix: str) -> Any:
    """``config_instance`` with every flag of :func:`add_config_flags` (same ``prefix``) that ``args`` holds a value
    for applied through ``dataclasses.replace``, nested configs first; a validation error names the flags.

        config = config_from_flags(parser.parse_args(), insta.paper_config(), "insta")
    """
    if not _is_instance(config_instance):
        raise TypeError(f"config_instance: expected a dataclass instance, got {config_instance!r}")
    values = vars(args)
    if not any(k.startswith(f"{prefix}:") for k in values):
        raise ValueError(f"args: expected the flags of add_config_flags(..., prefix={prefix!r}); the namespace has none")

    def apply(config: Any, path: tuple[str, ...]) -> tuple[Any, list[str]]:
        hints, changes, given = _hints(type(config)), {}, []
        for f in dataclasses.fields(config):
            if not f.init:
                continue
            sub, tp = (*path, f.name), hints.get(f.name, Any)
            value, changed = getattr(config, f.name), False
            whole = values.get(_dest(prefix, sub), NOT_GIVEN)
            if whole is not NOT_GIVEN:
                value, changed = whole, True
                given.append(_flag(prefix, sub))
            child = _nested(value, tp)
            if child is not None:
                new_child, child_given = apply(child, sub)
                if child_given:
                    if changed and value is None:
                        raise ValueError(f"{_flag(prefix, sub)}: none contradicts {', '.join(child_given)}")
                    value, changed = new_child, True
                    given += child_given
            if changed:
                changes[f.name] = value
        if changes:
            try:
                config = dataclasses.replace(config, **changes)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{', '.join(given)}: {error}") from error
        return config, given

    return apply(config_instance, ())[0]


# ------------------------------------------------------------------------------------------------- help from source


def _class_help(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature says nothing
        doc = ""
    first = doc.split("\n\n")[0].replace("\n", " ")
    first = first.split(". ")[0].rstrip(".")  # the first sentence: the help lists many groups
    return f"{cls.__qualname__}: {first}" if first else cls.__qualname__


@functools.cache
def _field_comments(cls: type) -> dict[str, str]:
    """{field: its comments}: the comment lines directly above the field and the trailing comment of its line,
    from the source of the class that declares it (a subclass's own comment wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (a REPL class, a frozen build): the help falls back to the type
            continue
        declared = klass.__dict__.get("__annotations__", {})
        out.update({k: v for k, v in _comments(source).items() if k in declared and v})
    return out


_DIRECTIVES = ("fmt:", "noqa", "type:", "pragma", "pyright:")


def _comments(source: str) -> dict[str, str]:
    """The comments of each annotated name in a class's body (``name: type = ...``), by tokenize: the comment
    lines directly above (no blank line between) and the comments inside the statement (its trailing one)."""
    out: dict[str, str] = {}
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    indent, body_column = 0, None
    above: list[str] = []  # comment lines waiting for the next statement
    statement: list[tokenize.TokenInfo] = []
    for token in tokens:
        if token.type == tokenize.INDENT:
            indent += 1
            continue
        if token.type == tokenize.DEDENT:
            indent -= 1
            continue
        if not statement and token.type == tokenize.COMMENT:
            if body_column is None or token.start[1] == body_column:
                above.append(token.string)
            continue
        if not statement and token.type == tokenize.NL:
            if token.line.strip() == "":
                above = []  # a blank line: the comments above were about something else
            continue
        statement.append(token)
        if token.type not in (tokenize.NEWLINE, tokenize.ENDMARKER):
            continue
        first = next((t for t in statement if t.type not in (tokenize.NL, tokenize.COMMENT)), None)
        if indent == 1 and first is not None:
            body_column = body_column if body_column is not None else first.start[1]
            significant = [t for t in statement if t.type not in (tokenize.NL, tokenize.COMMENT, tokenize.NEWLINE)]
            if len(significant) > 1 and first.type == tokenize.NAME and significant[1].string == ":":
                inside = [t.string for t in statement if t.type == tokenize.COMMENT]
                out[first.string] = _comment_text(above + inside)
        above, statement = [], []
    return out


def _comment_text(comments: list[str]) -> str:
    lines = [c.lstrip("#").strip() for c in comments]
    return " ".join(line for line in lines if line and not line.startswith(_DIRECTIVES))
