"""Picks tables in every format cryopick reads and writes (see :mod:`.registry`)."""

from cryopick.io.picks.checks import check_position_scale
from cryopick.io.picks.registry import (
    PICKS_COLUMNS,
    PICKS_FORMATS,
    TRANSFORMATION_COLUMN,
    PicksFormat,
    check_experiments,
    empty_picks,
    make_picks,
    read_copick_project_picks,
    read_picks,
    read_truth,
    validate_picks,
    write_copick_picks,
    write_picks,
)

__all__ = [
    "PICKS_COLUMNS",
    "PICKS_FORMATS",
    "TRANSFORMATION_COLUMN",
    "PicksFormat",
    "check_experiments",
    "check_position_scale",
    "empty_picks",
    "make_picks",
    "read_copick_project_picks",
    "read_picks",
    "read_truth",
    "validate_picks",
    "write_copick_picks",
    "write_picks",
]
