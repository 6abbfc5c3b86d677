"""Slice montages for ``cryopick report``: tomogram slices with each pick drawn where it is.

Pure functions: arrays and tables in, :class:`matplotlib.figure.Figure` out. Figures are
built on matplotlib's object API (no pyplot, no global state), so they render headless.
The metric and training plots are in :mod:`cryopick.report.plots`.

Slice montages have exact pixel geometry: each panel occupies a known pixel box
(:class:`PanelBox`), the slice image fills it with no margin and is drawn with an
``extent`` in Å, so a position in Å maps to a pixel by :meth:`PanelBox.angstrom_to_pixel`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PatchCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle
from numpy.typing import ArrayLike, NDArray

from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.core.picks import group_rows
from cryopick.report.slices import compute_display_range

TITLE_PX = 22  # band above each panel for its caption
GAP_PX = 8  # space between panels
LEGEND_PX = 56  # band at the bottom of a montage for the legend
LINE_PX = 2.0  # circle line width, pixels

# How each match status is drawn: TP solid circle, FP dashed circle, FN cross at the truth centre
LineStyle = str | tuple[float, tuple[float, ...]]  # matplotlib's named or (offset, dashes)


@dataclass(frozen=True)
class StatusStyle:
    """How picks of one match status are drawn, and their legend entry."""

    label: str
    linestyle: LineStyle = "solid"  # of the circle
    cross: bool = False  # a cross at the truth centre instead of a circle


STATUS_STYLES: dict[str, StatusStyle] = {
    "pick": StatusStyle("pick"),
    "tp": StatusStyle("true positive (pick)"),
    "fp": StatusStyle("false positive (pick)", linestyle=(0, (3, 2))),
    "fn": StatusStyle("missed (truth)", cross=True),
}

log = logging.getLogger(__name__)


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
    cut_radii = np.sqrt(np.clip(radii[visible] ** 2 - distance[visible] ** 2, 0.0, None))
    centers_2d = np.stack([centers[visible, 2], centers[visible, vertical]], axis=1)
    return centers_2d, cut_radii, visible


def layout_montage(
    xy_indices: Sequence[int],
    xz_index: int | None,
    shape_zyx: tuple[int, int, int],
    spacing_A: float,
    panel_width_px: int = 640,
    n_columns: int = 2,
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
                GAP_PX,
                bottom + TITLE_PX,
                panel_width_px,
                xz_height,
                "y",
                int(xz_index),
                (nz, nx),
                spacing_A,
            )
        )
        bottom += TITLE_PX + xz_height + GAP_PX
    width = GAP_PX + n_columns * (panel_width_px + GAP_PX)
    return boxes, (width, bottom + LEGEND_PX)


def _axes_for_box(fig: Figure, box: PanelBox, size_px: tuple[int, int]) -> Axes:
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


def _draw_circles(
    ax: Axes,
    centers_2d_A: NDArray[np.float64],
    radii_A: NDArray[np.float64],
    colour: str,
    status: str,
    line_pt: float,
) -> None:
    style = STATUS_STYLES[status]
    if style.cross:  # a miss: a cross spanning the truth particle's cut circle
        d = radii_A[:, None] / np.sqrt(2.0)
        h, v = centers_2d_A[:, :1], centers_2d_A[:, 1:]
        down = np.stack([np.hstack([h - d, v - d]), np.hstack([h + d, v + d])], axis=1)
        up = np.stack([np.hstack([h - d, v + d]), np.hstack([h + d, v - d])], axis=1)
        segments = list(np.concatenate([down, up]))  # each (2, 2): start and end point
        lines = LineCollection(segments, colors=colour, linewidths=line_pt)
        lines.set_capstyle("butt")
        ax.add_collection(lines)
        return
    patches = [Circle((h, v), r) for (h, v), r in zip(centers_2d_A, radii_A, strict=True)]
    ax.add_collection(
        PatchCollection(
            patches,
            facecolor="none",
            edgecolor=colour,
            linewidth=line_pt,
            linestyle=style.linestyle,
        )
    )


def plot_montage(
    slices: Sequence[NDArray],
    boxes: Sequence[PanelBox],
    size_px: tuple[int, int],
    markers: pd.DataFrame,
    title: str = "",
    dpi: float = 100.0,
    particles: ParticleSet | None = None,
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
    particles : ParticleSet, optional
        The set the markers' types belong to: sphere radii and colours (default CZII).

    Returns
    -------
    matplotlib.figure.Figure
    """
    particle_set = resolve_particle_set(particles)
    width, height = size_px
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    line_pt = LINE_PX * 72.0 / dpi
    centers = markers[["z", "y", "x"]].to_numpy(dtype=np.float64)
    radii = np.array([particle_set.radius_A(n) for n in markers["particle_type"]], dtype=float)
    for image, box in zip(slices, boxes, strict=True):
        ax = _axes_for_box(fig, box, size_px)
        vmin, vmax = compute_display_range(image)
        left, right, bottom, top = box.extent_A
        ax.imshow(
            image,
            cmap="gray",
            vmin=vmin,
            vmax=vmax,
            extent=box.extent_A,
            interpolation="nearest",
            aspect="auto",
        )
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        plane = "XY" if box.axis == "z" else "XZ"
        caption = f"{plane}  {box.axis} = {box.position_A:.0f} Å  (index {box.index})"
        fig.text(
            box.x0_px / width,
            1.0 - (box.y0_px - 4) / height,
            caption,
            fontsize=10,
            va="bottom",
            ha="left",
        )
        centers_2d, cut_radii, visible = cut_spheres(centers, radii, box.axis, box.position_A)
        shown = markers[visible]
        for (name, status), idx in group_rows(shown, ["particle_type", "status"]).items():
            colour = particle_set.colour(name)
            _draw_circles(ax, centers_2d[idx], cut_radii[idx], colour, status, line_pt)
    _draw_legend(fig, markers, size_px, title, particle_set)
    return fig


def _draw_legend(
    fig: Figure,
    markers: pd.DataFrame,
    size_px: tuple[int, int],
    title: str,
    particle_set: ParticleSet,
) -> None:
    height = size_px[1]
    ax = fig.add_axes((0.0, 0.0, 1.0, LEGEND_PX / height))
    ax.set_axis_off()
    handles = [
        Line2D([], [], color=particle_set.colour(n), lw=4, label=n)
        for n in sorted(set(markers["particle_type"]), key=particle_set.label)
    ]
    for status in ("tp", "fp", "fn", "pick"):
        if status in set(markers["status"]):
            style = STATUS_STYLES[status]
            if style.cross:
                handle = Line2D([], [], color="black", label=style.label, marker="x", lw=0, ms=8)
            else:
                handle = Line2D([], [], color="black", label=style.label, ls=style.linestyle, lw=2)
            handles.append(handle)
    if handles:
        ax.legend(
            handles=handles,
            loc="center",
            ncol=min(len(handles), 5),
            fontsize=8,
            frameon=False,
            title=title or None,
            title_fontsize=9,
        )


def render_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes at its own dpi, without cropping (keeps pixel geometry)."""
    from PIL import Image  # matplotlib's own dependency

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, facecolor=fig.get_facecolor())
    buf.seek(0)
    rgb = io.BytesIO()  # opaque figures: dropping alpha saves a quarter of the bytes
    Image.open(buf).convert("RGB").save(rgb, format="PNG")
    return rgb.getvalue()
