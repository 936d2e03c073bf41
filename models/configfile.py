"""YAML front end of the plant configuration: every problem at once, each with its line.

`parse_plant` turns the text of a plant file into a validated `PlantConfig` or raises
`ConfigError` listing *all* problems, each as ``file:line key.path: what is allowed, got what``.
PyYAML's composed node tree gives the line of every key and list item; pydantic's error
locations are mapped onto it. Duplicate keys, which YAML loaders silently collapse, are
reported too. The caller reads the file; this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from models.plant import PlantConfig, cross_check

__all__ = [
    "ConfigError",
    "Loc",
    "Problem",
    "key_path",
    "line_of",
    "load_yaml",
    "parse_plant",
]

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where} {self.message}"


class ConfigError(ValueError):
    """A plant file that cannot be used; ``problems`` holds every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def key_path(loc: Iterable[str | int]) -> str:
    """The ``lines[0].stations[2].lsl`` spelling of a location."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _lines(node: yaml.Node, loc: Loc, out: dict[Loc, int], dups: list[tuple[Loc, int]]) -> None:
    out.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for k, v in node.value:
            key = k.value
            if key in seen:
                dups.append((loc + (key,), k.start_mark.line + 1))
            seen.add(key)
            out[loc + (key,)] = k.start_mark.line + 1
            _lines(v, loc + (key,), out, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, loc + (i,), out, dups)


def line_of(loc: Loc, lines: dict[Loc, int]) -> int:
    """The line of ``loc``, or of its nearest parent present in the file (0 if none)."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 0


def _dig(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


_HINT = {"lsl": "below usl", "usl": "above lsl"}


def _message(err: Any, data: Any) -> tuple[Loc, str]:
    """Translate one pydantic error into (location, 'must be ..., got ...')."""
    loc: Loc = tuple(err["loc"])
    typ = err["type"]
    ctx = err.get("ctx") or {}
    given = err.get("input")
    if typ == "value_error" and str(ctx.get("error", "")).startswith("@"):
        _, field, msg, given_repr = str(ctx["error"]).split("@", 3)
        return loc + (field,), f"{msg}, got {given_repr}"
    if typ == "missing":
        return loc, "is required"
    if typ in ("extra_forbidden", "unexpected_keyword_argument"):  # a model, a dataclass
        parent = _dig(data, loc[:-1])
        return loc, (
            f"is not a known key (a typo, or an option that does not exist); got {given!r}"
            if not isinstance(parent, dict)
            else "is not a known key (a typo, or an option that does not exist)"
        )
    if typ in ("float_parsing", "float_type", "finite_number"):
        what = "a number"
        other = {"lsl": "usl", "usl": "lsl"}.get(str(loc[-1])) if loc else None
        if other is not None:
            bound = _dig(data, loc[:-1] + (other,))
            if isinstance(bound, int | float) and not isinstance(bound, bool):
                what = f"a number {_HINT[str(loc[-1])]} ({bound})"
        return loc, f"must be {what}, got {given!r}"
    if typ in ("int_parsing", "int_type", "int_from_float"):
        return loc, f"must be an integer, got {given!r}"
    if typ in ("bool_parsing", "bool_type"):
        return loc, f"must be true or false, got {given!r}"
    if typ == "string_type":
        return loc, f"must be a string, got {given!r}"
    if typ in ("list_type",):
        return loc, f"must be a list, got {given!r}"
    if typ in ("model_type", "model_attributes_type", "dict_type", "dataclass_type"):
        return loc, f"must be a mapping of keys, got {given!r}"
    if typ == "literal_error":
        return loc, f"must be one of {ctx.get('expected')}, got {given!r}"
    if typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sym = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[typ]
        bound = next(iter(ctx.values()))
        return loc, f"must be {sym} {bound}, got {given!r}"
    if typ == "string_pattern_mismatch":
        return loc, (
            "must be an identifier of letters, digits, '_', '.', '-' (no spaces or slashes), "
            f"got {given!r}"
        )
    if typ == "too_short":
        return loc, f"must have at least {ctx.get('min_length')} entries, got {len(given or [])}"
    if typ == "value_error":
        return loc, f"{ctx.get('error')}, got {given!r}"
    return loc, f"{err['msg']}, got {given!r}"


def load_yaml(
    text: str, name: str, needs: str
) -> tuple[dict[str, Any], dict[Loc, int], list[tuple[Loc, int]]]:
    """Parse ``text`` as a YAML mapping; returns the data, the line of every key and list item,
    and the duplicated keys (which YAML loaders silently collapse).

    Raises `ConfigError` with one located problem for invalid YAML or for a top level that is
    not a mapping; ``needs`` says what the mapping must hold, for that message.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        reason = getattr(e, "problem", None) or str(e)
        raise ConfigError([Problem(name, line, "", f"is not valid YAML: {reason}")]) from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"{type(data).__name__} {data!r}"
        raise ConfigError([Problem(name, 1, "", f"must be a mapping with {needs}, got {got}")])
    lines: dict[Loc, int] = {}
    dups: list[tuple[Loc, int]] = []
    if root is not None:
        _lines(root, (), lines, dups)
    return data, lines, dups


def parse_plant(text: str, name: str = "<config>") -> PlantConfig:
    """Validate a plant file's text; raises `ConfigError` with every problem found.

    Examples:
        >>> parse_plant("site: {id: p1}\\nlines: [{id: l1, area: cells}]\\n").site.id
        'p1'
        >>> try:
        ...     parse_plant("site: {id: p1}\\nlines: [{id: l1, area: c, speed: 3}]\\n", "p.yaml")
        ... except ConfigError as e:
        ...     print(e)
        p.yaml:2 lines[0].speed: is not a known key (a typo, or an option that does not exist)
    """
    data, lines, dups = load_yaml(text, name, "site and lines")
    problems = [
        Problem(name, ln, key_path(loc), "appears twice; only one may be given") for loc, ln in dups
    ]
    try:
        cfg = PlantConfig.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc, msg = _message(err, data)
            problems.append(Problem(name, line_of(loc, lines), key_path(loc), msg))
        raise ConfigError(sorted(problems, key=lambda p: p.line)) from None
    for loc, allowed, given in cross_check(cfg):
        problems.append(
            Problem(name, line_of(loc, lines), key_path(loc), f"{allowed}, got {given!r}")
        )
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line))
    return cfg
