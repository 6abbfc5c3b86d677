"""Metric and training plots for ``cryopick report``: F-beta curves, histograms, learning curve.

Built on matplotlib's object API (no pyplot), so they render headless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from cryopick.core.particles import ParticleSet, resolve_particle_set


def plot_class_curves(
    particle_type: str,
    curve: Any | None,
    scores: Mapping[str, ArrayLike],
    threshold: float | None = None,
    beta: float = 4.0,
    n_missed: int | None = None,
    dpi: float = 100.0,
    *,
    tta_threshold: float | None = None,
    particles: ParticleSet | None = None,
) -> Figure:
    """Precision, recall and F-beta against score threshold, beside the pick-score histogram.

    Parameters
    ----------
    particle_type : str
        Class name (sets the colour and title).
    curve : cryopick.evaluation.metric.FbetaCurve or None
        ``thresholds``, ``precision``, ``recall``, ``fbeta`` arrays (from
        :func:`cryopick.evaluation.metric.fbeta_curve`); None without truth (histogram only).
    scores : mapping of str to array_like
        Pick scores by group, e.g. ``{"all picks": s}`` or ``{"true positive": s1,
        "false positive": s2}``; drawn as stacked histograms.
    threshold : float or None
        The model's threshold for this class, marked on both axes (solid line).
    beta : float
        The F-beta's beta, for the label.
    n_missed : int or None
        Truth particles no pick found, shown in the histogram's title.
    dpi : float
        Pixels per inch.
    tta_threshold : float or None
        The model's threshold for flip-TTA predictions, marked too (dashed line).
    particles : ParticleSet, optional
        The set ``particle_type`` belongs to, for its colour (default the CZII set).

    Returns
    -------
    matplotlib.figure.Figure
    """
    colour = resolve_particle_set(particles).colour(particle_type)
    n_axes = 2 if curve is not None else 1
    fig = Figure(figsize=(4.2 * n_axes, 3.0), dpi=dpi, facecolor="white", layout="constrained")
    axes = fig.subplots(1, n_axes, squeeze=False)[0]
    marks = {"model threshold": threshold, "TTA threshold": tta_threshold}
    if curve is not None:
        _plot_metric_curves(axes[0], particle_type, curve, colour, beta, marks)
    _plot_score_histogram(axes[-1], particle_type, scores, colour, n_missed, marks)
    return fig


_MARK_STYLES = {"model threshold": "-", "TTA threshold": "--"}


def _mark_thresholds(ax: Any, marks: Mapping[str, float | None], label: bool) -> None:
    """Draw a vertical line at each threshold that is set (labelled for the legend)."""
    for name, value in marks.items():
        if value is not None:
            legend = {"label": f"{name} {value:.3g}"} if label else {}
            ax.axvline(value, color="black", lw=1, ls=_MARK_STYLES[name], **legend)


def _plot_metric_curves(
    ax: Any,
    particle_type: str,
    curve: Any,
    colour: str,
    beta: float,
    marks: Mapping[str, float | None],
) -> None:
    """Plot precision, recall and F-beta against the score threshold on ``ax``."""
    # keeping score >= t: between two pick scores the metric is that of the higher one;
    # below the lowest score all picks are kept, above the highest none (metric 0)
    t = np.asarray(curve.thresholds, dtype=float)[::-1]
    if len(t):
        pad = 0.05 * max(float(t[-1] - t[0]), 1.0)
        t = np.concatenate([[t[0] - pad], t, [t[-1] + pad]])
    for values, style in (
        (curve.precision, {"color": "0.35", "ls": "--", "label": "precision"}),
        (curve.recall, {"color": "0.35", "ls": ":", "label": "recall"}),
        (curve.fbeta, {"color": colour, "lw": 2, "label": f"F{beta:g}"}),
    ):
        v = np.asarray(values, dtype=float)[::-1]
        if len(v):
            v = np.concatenate([[v[0]], v, [0.0]])
        ax.step(t, v, where="pre", **style)
    ax.set_xlabel("score threshold")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{particle_type}: metric vs threshold", fontsize=10)
    _mark_thresholds(ax, marks, label=True)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _plot_score_histogram(
    ax: Any,
    particle_type: str,
    scores: Mapping[str, ArrayLike],
    colour: str,
    n_missed: int | None,
    marks: Mapping[str, float | None],
) -> None:
    """Plot the stacked histogram of pick scores by group on ``ax``."""
    groups = {k: np.asarray(v, dtype=float) for k, v in scores.items()}
    groups = {k: v[np.isfinite(v)] for k, v in groups.items()}
    values = np.concatenate(list(groups.values())) if groups else np.empty(0)
    if values.size:
        bins = np.histogram_bin_edges(values, bins=min(30, max(5, values.size // 3)))
        shades = [colour, "0.6", "0.3"]
        ax.hist(
            list(groups.values()),
            bins=bins,
            stacked=True,
            label=list(groups),
            color=shades[: len(groups)],
        )
        if len(groups) > 1:
            ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no scored picks", ha="center", va="center", transform=ax.transAxes)
    _mark_thresholds(ax, marks, label=False)
    ax.set_xlabel("pick score")
    ax.set_ylabel("picks")
    title = f"{particle_type}: score histogram"
    if n_missed is not None:
        title += f" ({n_missed} missed)"
    ax.set_title(title, fontsize=10)


def plot_learning_curve(points: Sequence[Sequence[float]], dpi: float = 100.0) -> Figure:
    """Plot the validation score against training step and wall-clock time.

    Parameters
    ----------
    points : sequence of (wall_s, step, score)
        The model card's ``learning_curve``.
    dpi : float
        Pixels per inch.

    Returns
    -------
    matplotlib.figure.Figure
    """
    data = np.asarray(points, dtype=float).reshape(-1, 3)
    fig = Figure(figsize=(8.4, 3.0), dpi=dpi, facecolor="white", layout="constrained")
    ax_step, ax_wall = fig.subplots(1, 2)
    longest_s = float(data[:, 0].max()) if len(data) else 0.0
    unit, per = (
        ("s", 1.0) if longest_s < 120 else ("min", 60.0) if longest_s < 7200 else ("h", 3600.0)
    )
    for ax, x, label in (
        (ax_step, data[:, 1], "training step"),
        (ax_wall, data[:, 0] / per, f"wall-clock time ({unit})"),
    ):
        ax.plot(x, data[:, 2], marker="o", ms=3, color="#1f77b4")
        ax.set_xlabel(label)
        ax.set_ylabel("validation score")
        ax.grid(alpha=0.3)
    if len(data):
        best = int(np.argmax(data[:, 2]))
        ax_step.set_title(f"best {data[best, 2]:.3f} at step {data[best, 1]:.0f}", fontsize=10)
    return fig
