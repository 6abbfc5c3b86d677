"""Declare pickable objects in a copick config JSON without touching anything else in it.

copick's API refuses pick files of objects its config does not declare, so before cryopick
writes picks of such an object into a project it adds the object to
``pickable_objects``. The new entries are inserted as text into the existing JSON: every
other byte of the user's file (names, roots, formatting, key order, extra fields) stays
as it was, and the result is checked by parsing it before it replaces the file, atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryopick.core.errors import InputError
from cryopick.core.particles import PARTICLES
from cryopick.io.atomic import write_text_atomic
from cryopick.io.layout import make_copick_config

log = logging.getLogger(__name__)

OBJECTS_KEY = "pickable_objects"


def _string_end(text: str, start: int) -> int:
    """Index just after the JSON string starting with the quote at ``start``."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    raise ValueError("unterminated string")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _matching_close(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``start`` (strings skipped)."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == '"':
            i = _string_end(text, i)
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced brackets")


def locate_top_level_value(text: str, key: str) -> tuple[int, int] | None:
    """Return ``(start, end)`` indices of the bracketed value of a top-level ``key``.

    ``text[start]`` is the opening and ``text[end]`` the closing bracket; None if the key
    is absent or its value is not an array or object.
    """
    depth, i = 0, 0
    while i < len(text):
        c = text[i]
        if c == '"':
            end = _string_end(text, i)
            after = _skip_space(text, end)
            if (
                depth == 1
                and after < len(text)
                and text[after] == ":"
                and json.loads(text[i:end]) == key
            ):
                value = _skip_space(text, after + 1)
                if value < len(text) and text[value] in "[{":
                    return value, _matching_close(text, value)
                return None
            i = end
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return None


def insert_array_items(text: str, key: str, items: Sequence[dict]) -> str:
    """Append ``items`` to the top-level array ``key`` of JSON ``text``, as text.

    The key is added after the opening brace when missing. Everything else is kept
    byte for byte.
    """
    encoded = [json.dumps(item) for item in items]
    span = locate_top_level_value(text, key)
    if span is None:
        brace = _skip_space(text, 0)
        if brace >= len(text) or text[brace] != "{":
            raise ValueError("not a JSON object")
        rest = text[brace + 1 :]
        comma = "," if rest.strip() and rest.strip()[0] != "}" else ""
        entry = f"\n  {json.dumps(key)}: [{', '.join(encoded)}]{comma}"
        return text[: brace + 1] + entry + rest
    start, end = span
    inner = text[start + 1 : end]
    if not inner.strip():
        return text[: start + 1] + ", ".join(encoded) + text[end:]
    first = _skip_space(text, start + 1)
    indent = text[start + 1 : first] or " "
    last = end - 1
    while text[last] in " \t\r\n":
        last -= 1
    added = "".join(f",{indent}{item}" for item in encoded)
    return text[: last + 1] + added + text[last + 1 :]


def _new_entries(names: Sequence[str], declared: Sequence[object]) -> list[dict[str, Any]]:
    """Config entries (as :func:`make_copick_config` writes them) with free labels."""
    templates = {o["name"]: o for o in make_copick_config("", Path.cwd())[OBJECTS_KEY]}
    used = {o.get("label") for o in declared if isinstance(o, dict)}
    entries = []
    for name in names:
        entry = dict(templates[name])
        if entry["label"] in used:
            entry["label"] = max((u for u in used if isinstance(u, int)), default=0) + 1
        used.add(entry["label"])
        entries.append(entry)
    return entries


def declare_pickable_objects(config_path: str | Path, names: Sequence[str]) -> list[str]:
    """Add cryopick particle types ``names`` to a copick config's ``pickable_objects``.

    Only names not declared yet are added (canonical names of
    :data:`cryopick.core.particles.PARTICLES`); the file is rewritten atomically with every other
    byte unchanged.

    Returns
    -------
    list of str
        The names added (empty when all were declared).

    Raises
    ------
    InputError
        If the config cannot be read or edited safely.
    """
    config_path = Path(config_path)
    known = {p.name for p in PARTICLES}
    try:
        text = config_path.read_text()
        config = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(config_path, f"cannot read copick config: {err}") from None
    declared = config.get(OBJECTS_KEY) or []
    if not isinstance(declared, list):
        raise InputError(config_path, f"'{OBJECTS_KEY}' is not a list")
    present = {o.get("name") for o in declared if isinstance(o, dict)}
    missing = [n for n in dict.fromkeys(names) if n not in present and n in known]
    if not missing:
        return []
    entries = _new_entries(missing, declared)
    try:
        new_text = insert_array_items(text, OBJECTS_KEY, entries)
        ok = json.loads(new_text) == {**config, OBJECTS_KEY: [*declared, *entries]}
    except ValueError:
        ok = False
    if not ok:
        raise InputError(
            config_path,
            f"cannot add {missing} to '{OBJECTS_KEY}' without rewriting the file; "
            "add them by hand (or with copick) and run again",
        )
    write_text_atomic(config_path, new_text)
    log.warning("%s: declared new pickable object(s) %s for cryopick's picks", config_path, missing)
    return missing
