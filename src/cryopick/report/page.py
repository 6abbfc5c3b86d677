"""``cryopick report``: one self-contained HTML page to check picks by eye.

The page holds, with every image embedded as a base64 PNG:

* a summary table per class: picks and their score distribution (and the expected number
  of particles when the model's card calibrates scores); with truth, the CZII metric (the
  numbers of ``cryopick evaluate``, from :func:`cryopick.evaluation.metric.score_picks`);
* per tomogram, a montage of XY slices and one XZ slice with each pick drawn as the circle
  its sphere cuts from the slice, in its class colour (with truth: true positives solid,
  false positives dashed, misses as crosses);
* per class, precision / recall / F-beta against the score threshold and the score histogram,
  with the model's threshold marked (and its TTA threshold, when the card has one);
* with a model folder, its card (``model.json``, read as a :class:`cryopick.model.ModelCard`)
  and learning curve.

The numbers come from :mod:`cryopick.report.summary`, the page from
:mod:`cryopick.report.html`. Tomograms are read lazily: only the slices drawn are read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from cryopick.core.errors import InputError
from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.io.atomic import atomic_path, check_output_file, write_text_atomic
from cryopick.model import ModelCard, read_model_card
from cryopick.report import figures as rf
from cryopick.report import plots as report_plots
from cryopick.report.html import montage_filename, render_html
from cryopick.report.slices import choose_slice_indices, read_slice, warn_empty_slices
from cryopick.report.summary import (
    choose_report_particles,
    classify_picks,
    marked_thresholds,
    scores_are_calibrated,
    summarise_picks_per_class,
)

log = logging.getLogger(__name__)


class ReportConfig(BaseModel):
    """Options of ``cryopick report``.

    Attributes
    ----------
    tomo_type : str
        Tomogram type to show (copick / Kaggle inputs).
    n_xy_slices : int
        XY slices per tomogram, evenly spaced in z (ignored when ``xy_slices`` is given).
    xy_slices : list of int or None
        Explicit z indices of the XY slices.
    xz_slice : int or None
        y index of the XZ slice; the middle of the tomogram when None.
    slab_voxels : int
        Slices averaged around each shown slice (even counts round up to odd; 1 shows
        single slices).
    panel_width_px : int
        Width of each slice panel in pixels.
    n_columns : int
        XY panels per montage row.
    dpi : float
        Figure resolution, pixels per inch.
    beta : float
        The F-beta's beta (4 in the CZII challenge).
    runs : list of str or None
        Only these runs; all when None.
    truth_user, truth_session, picks_user, picks_session : str or None
        copick projects: read only picks of this user / session. A truth (or picks)
        project holding several user/session pairs after this filter is an error.
    star_pixel_A : float or None
        Pixel size of STAR positions in pixels (RELION-4, Warp); default the file's.
    particle_type : str or None
        Type of every pick of a picks STAR file not written by cryopick.
    spacing_A : float or None
        Voxel size (Å) of MRCs whose header has none, and of plain zarr arrays.
    """

    tomo_type: str = "denoised"
    n_xy_slices: int = Field(4, ge=1, le=24)
    xy_slices: list[int] | None = None
    xz_slice: int | None = None
    slab_voxels: int = Field(1, ge=1, le=31)
    panel_width_px: int = Field(640, ge=32, le=4096)
    n_columns: int = Field(2, ge=1, le=8)
    dpi: float = Field(100.0, gt=0)
    beta: float = Field(4.0, gt=0)
    runs: list[str] | None = None
    truth_user: str | None = None
    truth_session: str | None = None
    picks_user: str | None = None
    picks_session: str | None = None
    star_pixel_A: float | None = Field(None, gt=0)
    particle_type: str | None = None
    spacing_A: float | None = Field(None, gt=0)


def render_figures(
    tomograms: Sequence[Any],
    markers: pd.DataFrame,
    truth: pd.DataFrame | None,
    picks: pd.DataFrame,
    card: ModelCard | None,
    config: ReportConfig,
    particles: ParticleSet | None = None,
) -> dict[str, bytes]:
    """Render every figure of the report.

    Parameters
    ----------
    tomograms : sequence of Tomogram
        Tomograms to draw, one montage each.
    markers : pandas.DataFrame
        From :func:`classify_picks`.
    truth, picks : pandas.DataFrame
        Truth (or None) and picks tables.
    card : ModelCard or None
        Model card: its thresholds (and TTA thresholds) are marked on the class plots.
    config : ReportConfig
        Display options.
    particles : ParticleSet, optional
        The types drawn: colours, sphere radii, match distance (default the CZII set).

    Returns
    -------
    dict of str to bytes
        PNG bytes by file name: ``montage_<run>.png``, ``class_<name>.png``,
        ``learning_curve.png``.
    """
    ps = resolve_particle_set(particles)
    figures = {montage_filename(t.name): _render_montage(t, markers, config, ps) for t in tomograms}
    for name in _shown_classes(picks, truth, ps):
        figures[f"class_{name}.png"] = _render_class(name, markers, truth, picks, card, config, ps)
    if card is not None and card.learning_curve:
        figures["learning_curve.png"] = rf.render_png(
            report_plots.plot_learning_curve(card.learning_curve, dpi=config.dpi)
        )
    return figures


def _render_montage(
    tomo: Any, markers: pd.DataFrame, config: ReportConfig, particles: ParticleSet
) -> bytes:
    """Draw one tomogram's XY slices and XZ slice with its markers; PNG bytes."""
    nz, ny, nx = tomo.shape
    xy = config.xy_slices or choose_slice_indices(nz, config.n_xy_slices)
    if outside := [z for z in xy if not 0 <= z < nz]:
        log.warning("%s has %d z slices: not showing z = %s", tomo.name, nz, outside)
    xy = [z for z in xy if 0 <= z < nz]
    xz = ny // 2 if config.xz_slice is None else min(max(config.xz_slice, 0), ny - 1)
    boxes, size_px = rf.layout_montage(
        xy, xz, (nz, ny, nx), tomo.spacing_A, config.panel_width_px, config.n_columns
    )
    slices = [read_slice(tomo.data, b.axis, b.index, config.slab_voxels) for b in boxes]
    warn_empty_slices(f"{tomo.name} ({tomo.source})", slices, boxes)
    run_markers = markers[markers["experiment"] == tomo.name]
    fig = rf.plot_montage(
        slices, boxes, size_px, run_markers, title=tomo.name, dpi=config.dpi, particles=particles
    )
    log.info("drew %s: %d markers, %d slices", tomo.name, len(run_markers), len(boxes))
    return rf.render_png(fig)


def _render_class(
    name: str,
    markers: pd.DataFrame,
    truth: pd.DataFrame | None,
    picks: pd.DataFrame,
    card: ModelCard | None,
    config: ReportConfig,
    particles: ParticleSet,
) -> bytes:
    """Draw one class's metric curves (with truth) and score histogram; PNG bytes.

    The model's threshold for the class is marked, and its TTA threshold when the card
    has one (calibrated when the card calibrates scores: :func:`marked_thresholds`).
    """
    curve = None
    if truth is not None:
        from cryopick.evaluation.metric import fbeta_curve

        scored = picks[picks["particle_type"] == name]
        if scored["score"].notna().all():  # a curve needs a score on every pick
            curve = fbeta_curve(truth, scored, name, beta=config.beta, particles=particles)
    cls = markers[markers["particle_type"] == name]
    if truth is None:
        scores = {"picks": cls["score"]}
    else:
        scores = {
            "true positive": cls.loc[cls.status == "tp", "score"],
            "false positive": cls.loc[cls.status == "fp", "score"],
        }
        if (cls.status == "pick").any():  # picks of runs the truth does not cover
            scores["run without truth"] = cls.loc[cls.status == "pick", "score"]
    n_missed = None if truth is None else int((cls.status == "fn").sum())
    threshold, tta_threshold = marked_thresholds(card, name)  # in the picks' score units
    fig = report_plots.plot_class_curves(
        name,
        curve,
        scores,
        threshold,
        config.beta,
        n_missed,
        config.dpi,
        tta_threshold=tta_threshold,
        particles=particles,
    )
    return rf.render_png(fig)


def _shown_classes(
    picks: pd.DataFrame, truth: pd.DataFrame | None, particles: ParticleSet
) -> list[str]:
    present = set(picks["particle_type"])
    if truth is not None:
        present |= set(truth["particle_type"])
    return [n for n in particles.names if n in present]


def _restrict_to_runs(df: pd.DataFrame, tomograms: Sequence[Any], source: Any) -> pd.DataFrame:
    """Keep the rows of runs shown; one tomogram takes picks named after another run."""
    names = {t.name for t in tomograms}
    runs = set(df["experiment"])
    if len(tomograms) == 1 and runs and not runs & names:
        # e.g. a lone MRC file whose name is not the run name of the picks
        log.warning(
            "%s: picks of runs %s shown on %s", source, sorted(runs)[:10], tomograms[0].name
        )
        return df.assign(experiment=tomograms[0].name)
    if dropped := sorted(runs - names):
        log.warning(
            "%s: no tomogram shown for runs %s; their picks are left out", source, dropped[:10]
        )
    return df[df["experiment"].isin(names)].reset_index(drop=True)


def _read_picks_and_truth(
    picks_path: str | Path,
    truth_path: str | Path | None,
    tomograms: Sequence[Any],
    config: ReportConfig,
    particles: ParticleSet,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Read the picks and the truth (or None) of the shown runs, names from ``particles``."""
    from cryopick.io.picks import check_experiments, check_position_scale, read_picks, read_truth
    from cryopick.io.picks.checks import warn_position_problems

    shapes = {t.name: (t.shape, t.spacing_A) for t in tomograms}  # STAR files need them
    picks = read_picks(
        picks_path,
        tomogram_shapes=shapes,
        user_id=config.picks_user,
        session_id=config.picks_session,
        single_source=True,
        particles=particles,
        star_pixel_A=config.star_pixel_A,
        particle_type=config.particle_type,
    )
    picks = _restrict_to_runs(picks, tomograms, picks_path)
    warn_position_problems(picks, shapes, picks_path)
    if truth_path is None:
        return picks, None
    truth = read_truth(
        truth_path,
        tomogram_shapes=shapes,
        user_id=config.truth_user,
        session_id=config.truth_session,
        particles=particles,
        star_pixel_A=config.star_pixel_A,
    )
    truth = _restrict_to_runs(truth, tomograms, truth_path)
    check_experiments(truth, picks, truth_path, picks_path)
    check_position_scale(truth, picks, picks_path)
    return picks, truth


def write_report(
    input_path: str | Path,
    picks_path: str | Path,
    out_path: str | Path,
    truth_path: str | Path | None = None,
    model_dir: str | Path | None = None,
    png_dir: str | Path | None = None,
    config: ReportConfig | None = None,
    *,
    particles: ParticleSet | None = None,
) -> Path:
    """Read tomograms, picks, truth and model card; write the HTML report (and PNGs).

    The particle types (names, colours, radii, score weights) are the model card's when
    ``model_dir`` is given, else those the picks project's copick config declares, else
    ``particles``, else the CZII set (:func:`choose_report_particles`).

    Parameters
    ----------
    input_path : str or Path
        Tomograms: anything :func:`cryopick.io.tomograms.read_tomograms` reads.
    picks_path : str or Path
        Picks (any format :func:`cryopick.io.picks.read_picks` reads).
    out_path : str or Path
        The HTML file to write (atomically).
    truth_path : str or Path, optional
        Ground-truth picks; adds the metric, match styles and curves.
    model_dir : str or Path, optional
        Model folder; adds the model card, learning curve and threshold marks.
    png_dir : str or Path, optional
        Also write every figure there as a PNG file.
    config : ReportConfig, optional
        Display options.
    particles : ParticleSet, optional
        The particle types when neither a model nor the picks project declares them (e.g.
        from ``cryopick report --particles FILE``).

    Returns
    -------
    Path
        ``out_path``.
    """
    from cryopick.io.tomograms import read_tomograms

    config = config or ReportConfig()
    check_output_file(out_path, [input_path, picks_path, truth_path], (".html", ".htm"))
    card = None if model_dir is None else read_model_card(model_dir)
    particle_set = choose_report_particles(card, picks_path, particles)
    tomograms = read_tomograms(
        input_path, tomo_type=config.tomo_type, runs=config.runs, spacing_A=config.spacing_A
    )
    if not tomograms:
        raise InputError(input_path, f"no tomograms of type {config.tomo_type!r} found")
    picks, truth = _read_picks_and_truth(picks_path, truth_path, tomograms, config, particle_set)
    sources = dict(tomograms=input_path, picks=picks_path, truth=truth_path, model=model_dir)
    page, figures = build_report(
        tomograms, picks, truth, card, config, sources, particles=particle_set
    )
    write_text_atomic(out_path, page)
    if png_dir is not None:
        for name, data in figures.items():
            with atomic_path(Path(png_dir) / name) as tmp:
                tmp.write_bytes(data)
    return Path(out_path)


def build_report(
    tomograms: Sequence[Any],
    picks: pd.DataFrame,
    truth: pd.DataFrame | None = None,
    card: ModelCard | None = None,
    config: ReportConfig | None = None,
    sources: dict[str, Any] | None = None,
    *,
    particles: ParticleSet | None = None,
) -> tuple[str, dict[str, bytes]]:
    """Build the report page from loaded inputs.

    Parameters
    ----------
    tomograms : sequence of Tomogram
        Objects with ``name``, ``data`` (lazy (z, y, x) array), ``shape`` and ``spacing_A``.
    picks, truth : pandas.DataFrame
        Picks tables (already restricted to these tomograms' runs).
    card : ModelCard, optional
        Model card (from :func:`cryopick.model.read_model_card`).
    config : ReportConfig, optional
        Display options.
    sources : dict, optional
        Input paths, listed at the top of the page.
    particles : ParticleSet, optional
        The types of the picks: names, colours, radii, score weights; default the card's
        set when a card is given, else the CZII set.

    Returns
    -------
    html : str
        The self-contained page.
    figures : dict of str to bytes
        The PNG figures embedded in it, by file name.
    """
    config = config or ReportConfig()
    if particles is None and card is not None:
        particles = card.particle_set
    ps = resolve_particle_set(particles)
    markers = classify_picks(picks, truth, particles=ps)
    calibrated = scores_are_calibrated(card)  # see cryopick.report.summary
    table, score = summarise_picks_per_class(
        picks, truth, beta=config.beta, particles=ps, calibrated=calibrated
    )
    figures = render_figures(tomograms, markers, truth, picks, card, config, particles=ps)
    page = render_html(
        table=table,
        score=score,
        figures=figures,
        card=card,
        config=config,
        tomograms=tomograms,
        sources=sources or {},
        particles=ps,
    )
    return page, figures
