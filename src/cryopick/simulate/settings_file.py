"""Simulator settings from a file: a preset with a JSON file's fields laid over it.

``cryopick simulate --config FILE`` reads a file of :class:`SimulationConfig` fields, or the
``simulation.json`` of an earlier project (which reproduces that project's settings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cryopick.core.errors import InputError
from cryopick.simulate.presets import SimulationConfig, get_preset


def merge_settings(base: dict[str, Any], overrides: Any) -> Any:
    """Return ``base`` with ``overrides`` laid over it, nested settings merged key by key.

    So a file naming only ``{"extras": {"gold": {"probability": 1}}}`` switches gold on and
    keeps the preset's other extras and gold settings; a non-mapping override replaces.
    """
    if not isinstance(overrides, dict):
        return overrides
    merged = dict(base)
    for key, value in overrides.items():
        old = merged.get(key)
        merged[key] = merge_settings(old, value) if isinstance(old, dict) else value
    return merged


def load_config(preset: str, config_path: str | Path | None = None) -> SimulationConfig:
    """Return a preset, optionally overridden by the fields of a JSON file.

    The file holds config fields, or is the ``simulation.json`` of an earlier project
    (its ``config`` is used, which reproduces that project's settings).

    Raises
    ------
    InputError
        If the preset is unknown, or the file is unreadable or has invalid settings.
    """
    try:
        base = get_preset(preset)
    except ValueError as err:
        raise InputError(None, f"--preset: {err}") from None
    if config_path is None:
        return base
    config_path = Path(config_path)
    try:
        overrides = json.loads(config_path.read_text())
        if isinstance(overrides, dict) and isinstance(overrides.get("config"), dict):
            overrides = overrides["config"]
        return SimulationConfig.model_validate(merge_settings(base.model_dump(), overrides))
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise InputError(config_path, f"cannot read simulator settings: {err}") from None
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise InputError(config_path, f"invalid simulator settings: {problems}") from None
