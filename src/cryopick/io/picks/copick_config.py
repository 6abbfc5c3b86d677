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
from cryopick.core.particles import (
    ParticleSet,
    ParticleSetError,
    ParticleSpec,
    default_particle_set,
    name_key,
    resolve_particle_set,
)
from cryopick.io.atomic import write_text_atomic
from cryopick.io.layout import ProjectLayout, pickable_objects_for

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


def _new_entries(
    names: Sequence[str], declared: Sequence[object], particles: ParticleSet
) -> list[dict[str, Any]]:
    """Config entries (as :func:`pickable_objects_for` writes them) with free labels."""
    templates = {o["name"]: o for o in pickable_objects_for(particles)}
    used = {o.get("label") for o in declared if isinstance(o, dict)}
    entries = []
    for name in names:
        entry = dict(templates[name])
        if entry["label"] in used:
            entry["label"] = max((u for u in used if isinstance(u, int)), default=0) + 1
        used.add(entry["label"])
        entries.append(entry)
    return entries


def declare_pickable_objects(
    config_path: str | Path, names: Sequence[str], particles: ParticleSet | None = None
) -> list[str]:
    """Add particle types ``names`` of a set to a copick config's ``pickable_objects``.

    Only names of ``particles`` (default: the CZII set) not declared yet are added; the
    file is rewritten atomically with every other byte unchanged.

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
    particle_set = resolve_particle_set(particles)
    known = set(particle_set.names)
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
    entries = _new_entries(missing, declared, particle_set)
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


def particle_set_from_objects(
    objects: Sequence[Any], source: str | Path | None = None
) -> ParticleSet | None:
    """Return the particle set a copick config's ``pickable_objects`` declare (None: no particles).

    Objects with ``is_particle: false`` (segmentation-only) are left out. When every
    particle object is a CZII type (by name or CryoET Data Portal alias) and carries no
    cryopick metadata, the result is the CZII set (:func:`default_particle_set`), so the
    challenge's projects keep the challenge's weights. Otherwise each object becomes a
    type: name, radius (required), colour, PDB id; weight and aliases from
    ``metadata["cryopick"]`` (weight 1 when absent); labels as declared when they are
    1..N, else in declaration order.

    Raises
    ------
    InputError
        For an object without a name or radius, or names that clash.
    """
    particles = [
        o for o in objects if isinstance(o, dict) and o.get("is_particle", True) is not False
    ]
    if not particles:
        return None
    czii = default_particle_set()
    ours = [
        o for o in particles if isinstance(o.get("metadata"), dict) and "cryopick" in o["metadata"]
    ]
    if not ours and all(isinstance(o.get("name"), str) and o["name"] in czii for o in particles):
        return czii
    specs = [_spec_from_object(o, source) for o in particles]
    labels = sorted(s.label for s in specs if s.label is not None)
    if labels != list(range(1, len(specs) + 1)):
        specs = [s.model_copy(update={"label": None}) for s in specs]
    try:
        return ParticleSet(tuple(specs))
    except ParticleSetError as err:
        raise InputError(source, f"pickable_objects: {err}") from None


def _spec_from_object(obj: dict[str, Any], source: str | Path | None) -> ParticleSpec:
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError(source, f"pickable_objects: an object has no name: {obj!r:.60}")
    radius = obj.get("radius")
    if not isinstance(radius, int | float) or not radius > 0:
        raise InputError(source, f"pickable_objects: object '{name}' has no positive radius")
    meta = (obj.get("metadata") or {}).get("cryopick") or _czii_metadata(name)
    colour = obj.get("color")
    hex_colour = None
    if isinstance(colour, list | tuple) and len(colour) >= 3:
        hex_colour = "#" + "".join(f"{int(c) & 255:02x}" for c in colour[:3])
    label = obj.get("label")
    try:
        return ParticleSpec(
            name=name,
            radius_A=float(radius),
            weight=float(meta.get("weight", 1.0)),
            label=label if isinstance(label, int) and label >= 1 else None,
            colour=hex_colour,
            aliases=tuple(meta.get("aliases", ())),
            pdb_id=obj.get("pdb_id") or None,
        )
    except ValueError as err:
        raise InputError(source, f"pickable_objects: object '{name}': {err}") from None


def _czii_metadata(name: str) -> dict[str, Any]:
    """Weight and aliases of a CZII type declared without cryopick metadata (else none)."""
    czii = default_particle_set()
    if name not in czii:
        return {}
    spec = czii.get(name)
    aliases = [a for a in (spec.name, *spec.aliases) if name_key(a) != name_key(name)]
    return {"weight": spec.weight, "aliases": aliases}


def read_particle_set(layout: ProjectLayout) -> ParticleSet | None:
    """Return the particle set a copick project's config declares (None: Kaggle layout or none)."""
    if layout.config_path is None:
        return None
    return particle_set_from_objects(layout.pickable_objects, layout.config_path)
