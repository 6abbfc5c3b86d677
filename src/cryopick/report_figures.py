"""Figures for ``cryopick report``: slice montages with picks, metric curves, learning curves.

Pure functions: arrays and tables in, :class:`matplotlib.figure.Figure` out. Figures are
built on matplotlib's object API (no pyplot, no global state), so they render headless.

Slice montages have exact pixel geometry: each panel occupies a known pixel box
(:class:`PanelBox`), the slice image fills it with no margin and is drawn with an
``extent`` in Å, so a position in Å maps to a pixel by :meth:`PanelBox.angstrom_to_pixel`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle
from numpy.typing import ArrayLike, NDArray

from cryopick.particles import get_particle

TITLE_PX = 22  # band above each panel for its caption
GAP_PX = 8  # space between panels
LEGEND_PX = 56  # band at the bottom of a montage for the legend
LINE_PX = 3.0  # circle line width, pixels
DISPLAY_PERCENTILES = (1.0, 99.0)  # robust contrast limits per slice

# How each match status is drawn: TP solid circle, FP dashed circle, FN cross at the truth centre
STATUS_STYLES: dict[str, dict[str, object]] = {
    "pick": {"linestyle": "solid", "label": "pick"},
    "tp": {"linestyle": "solid", "label": "true positive (pick)"},
    "fp": {"linestyle": (0, (3, 2)), "label": "false positive (pick)"},
    "fn": {"marker": "x", "label": "missed (truth)"},
}


@dataclass(frozen=True)
class PanelBox:
    """Where one slice panel sits in a montage, and which slice it shows.

    Attributes
    ----------
    x0_px, y0_px : int
        Top-left corner of the image area, in pixels from the figure's top-left corner.
    width_px, height_px : int
        Size of the image area in pixels.
    axis : str
        ``"z"`` for an XY slice (horizontal x, vertical y) or ``"y"`` for an XZ slice
        (horizontal x, vertical z).
    index : int
        Voxel index of the slice along ``axis``.
    shape_vox : tuple of int
        Slice shape (rows, columns) in voxels.
    spacing_A : float
        Voxel size in Å.
    """

    x0_px: int
    y0_px: int
    width_px: int
    height_px: int
    axis: str
    index: int
    shape_vox: tuple[int, int]
    spacing_A: float

    @property
    def position_A(self) -> float:
        """Position of the slice along ``axis`` in Å."""
        return self.index * self.spacing_A

    @property
    def extent_A(self) -> tuple[float, float, float, float]:
        """Image extent (left, right, bottom, top) in Å: voxel edges, row 0 at the top."""
        half = 0.5 * self.spacing_A
        rows, cols = self.shape_vox
        return (-half, cols * self.spacing_A - half, rows * self.spacing_A - half, -half)

    def angstrom_to_pixel(self, horizontal_A: float, vertical_A: float) -> tuple[float, float]:
        """Map an in-plane position (Å) to figure pixel coordinates (column, row)."""
        rows, cols = self.shape_vox
        col = self.x0_px + (horizontal_A / self.spacing_A + 0.5) * self.width_px / cols
        row = self.y0_px + (vertical_A / self.spacing_A + 0.5) * self.height_px / rows
        return col, row


def compute_display_range(image: ArrayLike) -> tuple[float, float]:
    """Robust grey-value limits of one slice: its 1st and 99th percentiles.

    Parameters
    ----------
    image : array_like
        A 2D slice.

    Returns
    -------
    tuple of float
        ``(vmin, vmax)``; ``vmax > vmin`` even for a constant slice.
    """
    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(values, DISPLAY_PERCENTILES)
    if vmax <= vmin:
        vmax = vmin + 1.0
    return float(vmin), float(vmax)


def cut_spheres(
    centers_zyx_A: ArrayLike, radius_A: float | ArrayLike, axis: str, position_A: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Cut spheres with a slice plane: the circles they show on that slice.

    A sphere of radius R whose centre lies at distance d from the plane shows a circle of
    radius ``sqrt(R**2 - d**2)``; spheres with ``d > R`` do not reach the plane.

    Parameters
    ----------
    centers_zyx_A : array_like, shape (N, 3)
        Sphere centres in Å, (z, y, x).
    radius_A : float or array_like, shape (N,)
        Sphere radii in Å.
    axis : {"z", "y"}
        Axis normal to the slice: ``"z"`` for XY slices, ``"y"`` for XZ slices.
    position_A : float
        Position of the slice along ``axis`` in Å.

    Returns
    -------
    centers_2d_A : numpy.ndarray, shape (M, 2)
        In-plane circle centres (horizontal, vertical) in Å: (x, y) for XY, (x, z) for XZ.
    radii_A : numpy.ndarray, shape (M,)
        Circle radii in Å.
    visible : numpy.ndarray of bool, shape (N,)
        Which spheres reach the slice (the M rows above, in order).
    """
    centers = np.asarray(centers_zyx_A, dtype=np.float64).reshape(-1, 3)
    radii = np.broadcast_to(np.asarray(radius_A, dtype=np.float64), (len(centers),))
    normal, vertical = {"z": (0, 1), "y": (1, 0)}[axis]
    distance = np.abs(centers[:, normal] - position_A)
    visible = distance <= radii
    cut_radii = radii[visible]
    centers_2d = np.stack([centers[visible, 2], centers[visible, vertical]], axis=1)
    return centers_2d, cut_radii, visible


def layout_montage(
    xy_indices: Sequence[int],
    xz_index: int | None,
    shape_zyx: tuple[int, int, int],
    spacing_A: float,
    panel_width_px: int = 400,
    n_columns: int = 3,
) -> tuple[list[PanelBox], tuple[int, int]]:
    """Place XY panels in a grid and the XZ panel in a row below; return boxes and figure size.

    Parameters
    ----------
    xy_indices : sequence of int
        z indices of the XY slices.
    xz_index : int or None
        y index of the XZ slice, or None for none.
    shape_zyx : tuple of int
        Tomogram shape (z, y, x) in voxels.
    spacing_A : float
        Voxel size in Å.
    panel_width_px : int
        Width of every panel in pixels (the x extent of the tomogram).
    n_columns : int
        Number of XY panels per row.

    Returns
    -------
    boxes : list of PanelBox
        One per slice, XY slices first.
    size_px : tuple of int
        Figure (width, height) in pixels, including the legend band.
    """
    nz, ny, nx = shape_zyx
    n_columns = max(1, min(n_columns, max(len(xy_indices), 1)))
    xy_height = max(1, round(panel_width_px * ny / nx))
    boxes: list[PanelBox] = []
    for k, z in enumerate(xy_indices):
        row, col = divmod(k, n_columns)
        x0 = GAP_PX + col * (panel_width_px + GAP_PX)
        y0 = TITLE_PX + row * (xy_height + TITLE_PX + GAP_PX)
        boxes.append(PanelBox(x0, y0, panel_width_px, xy_height, "z", int(z), (ny, nx), spacing_A))
    n_rows = -(-len(xy_indices) // n_columns)
    bottom = n_rows * (xy_height + TITLE_PX + GAP_PX)
    if xz_index is not None:
        xz_height = max(1, round(panel_width_px * nz / nx))
        boxes.append(
            PanelBox(
                GAP_PX, bottom + TITLE_PX, panel_width_px, xz_height, "y", int(xz_index),
                (nz, nx), spacing_A,
            )
        )  # fmt: skip
        bottom += TITLE_PX + xz_height + GAP_PX
    width = GAP_PX + n_columns * (panel_width_px + GAP_PX)
    return boxes, (width, bottom + LEGEND_PX)


def _axes_for_box(fig: Figure, box: PanelBox, size_px: tuple[int, int]):
    width, height = size_px
    rect = (
        box.x0_px / width,
        1.0 - (box.y0_px + box.height_px) / height,
        box.width_px / width,
        box.height_px / height,
    )
    ax = fig.add_axes(rect)
    ax.set_axis_off()
    return ax


def _draw_circles(ax, centers_2d_A, radii_A, colour: str, status: str, line_pt: float) -> None:
    if len(radii_A) == 0:
        return
    if status == "fn":
        # a miss: a cross spanning the truth particle's cut circle
        for (h, v), r in zip(centers_2d_A, radii_A, strict=True):
            d = r / np.sqrt(2.0)
            ax.plot([h - d, h + d], [v - d, v + d], color=colour, lw=line_pt, solid_capstyle="butt")
            ax.plot([h - d, h + d], [v + d, v - d], color=colour, lw=line_pt, solid_capstyle="butt")
        return
    patches = [Circle((h, v), r) for (h, v), r in zip(centers_2d_A, radii_A, strict=True)]
    ax.add_collection(
        PatchCollection(
            patches,
            facecolor="none",
            edgecolor=colour,
            linewidth=line_pt,
            linestyle=STATUS_STYLES[status]["linestyle"],
        )
    )


def plot_montage(
    slices: Sequence[NDArray],
    boxes: Sequence[PanelBox],
    size_px: tuple[int, int],
    markers: pd.DataFrame,
    title: str = "",
    dpi: float = 100.0,
) -> Figure:
    """Draw slices with each particle as a circle cut by the slice plane.

    Parameters
    ----------
    slices : sequence of numpy.ndarray
        One 2D image per box, shape ``box.shape_vox``.
    boxes, size_px
        From :func:`layout_montage`.
    markers : pandas.DataFrame
        Particles to draw: columns ``particle_type``, ``x``, ``y``, ``z`` (Å) and ``status``
        (``"pick"``, ``"tp"``, ``"fp"`` or ``"fn"``, see :data:`STATUS_STYLES`).
    title : str
        Written in the legend band.
    dpi : float
        Pixels per inch; the figure is ``size_px`` pixels when saved at this dpi.

    Returns
    -------
    matplotlib.figure.Figure
    """
    width, height = size_px
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    line_pt = LINE_PX * 72.0 / dpi
    centers = markers[["z", "y", "x"]].to_numpy(dtype=np.float64)
    radii = np.array([get_particle(n).radius_A for n in markers["particle_type"]], dtype=float)
    for image, box in zip(slices, boxes, strict=True):
        ax = _axes_for_box(fig, box, size_px)
        vmin, vmax = compute_display_range(image)
        left, right, bottom, top = box.extent_A
        ax.imshow(
            image, cmap="gray", vmin=vmin, vmax=vmax, extent=box.extent_A,
            interpolation="nearest", aspect="auto",
        )  # fmt: skip
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        plane = "XY" if box.axis == "z" else "XZ"
        caption = f"{plane}  {box.axis} = {box.position_A:.0f} Å  (index {box.index})"
        fig.text(
            box.x0_px / width, 1.0 - (box.y0_px - 4) / height, caption,
            fontsize=10, va="bottom", ha="left",
        )  # fmt: skip
        centers_2d, cut_radii, visible = cut_spheres(centers, radii, box.axis, box.position_A)
        shown = markers[visible]
        for (name, status), idx in shown.groupby(["particle_type", "status"]).indices.items():
            colour = get_particle(name).colour
            _draw_circles(ax, centers_2d[idx], cut_radii[idx], colour, status, line_pt)
    _draw_legend(fig, markers, size_px, title)
    return fig


def _draw_legend(fig: Figure, markers: pd.DataFrame, size_px: tuple[int, int], title: str) -> None:
    width, height = size_px
    ax = fig.add_axes((0.0, 0.0, 1.0, LEGEND_PX / height))
    ax.set_axis_off()
    handles = [
        Line2D([], [], color=get_particle(n).colour, lw=4, label=n)
        for n in sorted(set(markers["particle_type"]), key=lambda n: get_particle(n).label)
    ]
    statuses = [s for s in ("tp", "fp", "fn", "pick") if s in set(markers["status"])]
    for status in statuses:
        style = STATUS_STYLES[status]
        if status == "fn":
            handles.append(
                Line2D([], [], color="black", marker="x", lw=0, ms=8, label=style["label"])
            )
        else:
            handles.append(
                Line2D([], [], color="black", ls=style["linestyle"], lw=2, label=style["label"])
            )
    if handles:
        ax.legend(
            handles=handles, loc="center", ncol=min(len(handles), 5), fontsize=8, frameon=False,
            title=title or None, title_fontsize=9,
        )  # fmt: skip


def plot_class_curves(
    particle_type: str,
    curve: Any | None,
    scores: Mapping[str, ArrayLike],
    threshold: float | None = None,
    beta: float = 4.0,
    n_missed: int | None = None,
    dpi: float = 100.0,
) -> Figure:
    """Precision, recall and F-beta against score threshold, beside the pick-score histogram.

    Parameters
    ----------
    particle_type : str
        Class name (sets the colour and title).
    curve : cryopick.metrics.FbetaCurve or None
        ``thresholds``, ``precision``, ``recall``, ``fbeta`` arrays (from
        :func:`cryopick.metrics.fbeta_curve`); None without truth (histogram only).
    scores : mapping of str to array_like
        Pick scores by group, e.g. ``{"all picks": s}`` or ``{"true positive": s1,
        "false positive": s2}``; drawn as stacked histograms.
    threshold : float or None
        The model's threshold for this class, marked on both axes.
    beta : float
        The F-beta's beta, for the label.
    n_missed : int or None
        Truth particles no pick found, shown in the histogram's title.
    dpi : float
        Pixels per inch.

    Returns
    -------
    matplotlib.figure.Figure
    """
    colour = get_particle(particle_type).colour
    n_axes = 2 if curve is not None else 1
    fig = Figure(figsize=(4.2 * n_axes, 3.0), dpi=dpi, facecolor="white", layout="constrained")
    axes = fig.subplots(1, n_axes, squeeze=False)[0]
    if curve is not None:
        ax = axes[0]
        # keeping score >= t: between two pick scores the metric is that of the higher one
        t = np.asarray(curve.thresholds)[::-1]
        for values, style in (
            (curve.precision, {"color": "0.35", "ls": "--", "label": "precision"}),
            (curve.recall, {"color": "0.35", "ls": ":", "label": "recall"}),
            (curve.fbeta, {"color": colour, "lw": 2, "label": f"F{beta:g}"}),
        ):
            ax.step(t, np.asarray(values)[::-1], where="pre", **style)
        ax.set_xlabel("score threshold")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{particle_type}: metric vs threshold", fontsize=10)
        if threshold is not None:
            ax.axvline(threshold, color="black", lw=1, label=f"model threshold {threshold:.3g}")
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    ax = axes[-1]
    groups = {k: np.asarray(v, dtype=float) for k, v in scores.items()}
    groups = {k: v[np.isfinite(v)] for k, v in groups.items()}
    values = np.concatenate(list(groups.values())) if groups else np.empty(0)
    if values.size:
        bins = np.histogram_bin_edges(values, bins=min(30, max(5, values.size // 3)))
        shades = [colour, "0.6", "0.3"]
        ax.hist(
            list(groups.values()), bins=bins, stacked=True, label=list(groups),
            color=shades[: len(groups)],
        )  # fmt: skip
        if len(groups) > 1:
            ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no scored picks", ha="center", va="center", transform=ax.transAxes)
    if threshold is not None:
        ax.axvline(threshold, color="black", lw=1)
    ax.set_xlabel("pick score")
    ax.set_ylabel("picks")
    title = f"{particle_type}: score histogram"
    if n_missed is not None:
        title += f" ({n_missed} missed)"
    ax.set_title(title, fontsize=10)
    return fig


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
        ax_step.set_title(
            f"best {data[best, 2]:.3f} at step {data[best, 1]:.0f}", fontsize=10
        )  # fmt: skip
    return fig


def render_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes at its own dpi, without cropping (keeps pixel geometry)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, facecolor=fig.get_facecolor())
    return buf.getvalue()
