"""Pictures to check picks by eye: one self-contained HTML page (and PNGs)."""

from cryopick.report.page import (
    ReportConfig,
    build_report,
    classify_picks,
    read_model_card,
    render_figures,
    summarise_picks,
    write_report,
)

__all__ = [
    "build_report",
    "classify_picks",
    "read_model_card",
    "render_figures",
    "ReportConfig",
    "summarise_picks",
    "write_report",
]
