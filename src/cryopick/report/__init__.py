"""Pictures to check picks by eye: one self-contained HTML page (and PNGs)."""

from cryopick.report.page import ReportConfig, build_report, render_figures, write_report
from cryopick.report.summary import (
    choose_report_particles,
    classify_picks,
    summarise_picks_per_class,
)

__all__ = [
    "ReportConfig",
    "build_report",
    "choose_report_particles",
    "classify_picks",
    "render_figures",
    "summarise_picks_per_class",
    "write_report",
]
