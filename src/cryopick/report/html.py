"""The HTML page of ``cryopick report``: tables and embedded figures, no external resource.

Every image is a ``data:image/png;base64`` URI and the style sheet is inline, so the one
file opens in any browser, offline. The summary numbers are also embedded as JSON
(``<script type="application/json" id="cryopick-summary">``) for tools.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import pandas as pd

from cryopick.core.particles import ParticleSet, resolve_particle_set
from cryopick.model import ModelCard

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto;
       max-width: 1300px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em;
       margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.name, th.name { text-align: left; }
tr.total td { font-weight: bold; background: #fafafa; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 50%;
          margin-right: 0.4em; vertical-align: -0.1em; }
.meta { color: #666; font-size: 0.9em; } img { max-width: 100%; height: auto; }
figure { margin: 0.6em 0 1.4em 0; } figcaption { color: #555; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""


def montage_filename(run: str) -> str:
    """File name of a run's slice montage (characters unsafe in file names replaced)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(run))
    return f"montage_{safe}.png"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer() and digits == 0:
        return str(int(value))
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return escape(str(value))


def _img(figures: Mapping[str, bytes], name: str, alt: str) -> str:
    data = base64.b64encode(figures[name]).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}" data-figure="{escape(name)}">'
    )


def _swatch(name: str, particles: ParticleSet) -> str:
    """Return a dot in the type's colour (none for a name that is not a type of ``particles``)."""
    if name not in particles:
        return ""
    colour = escape(particles.colour(name))
    return f'<span class="swatch" style="background:{colour}"></span>'


_EXPECTED_NOTE = (
    '<p class="meta" id="expected-note">Expected particles: the sum of the picks\' scores, '
    "each the probability that the pick is right as calibrated on simulated tomograms. On "
    "data unlike them it can be far off: among complexes of shapes the model never saw it "
    "counted 6 times the beta-galactosidases present (docs/benchmarks.md). Check a few "
    "picks by eye before relying on it.</p>"
)


def render_summary_table(
    table: pd.DataFrame,
    score: float | None,
    beta: float = 4.0,
    particles: ParticleSet | None = None,
) -> str:
    """Render the per-class summary (:func:`cryopick.report.summarise_picks_per_class`) as HTML.

    ``particles`` gives each type's colour (default the CZII set). An
    ``expected_particles`` column (calibrated scores) is shown after the picks, with a
    note below the table on what it means and where it can be wrong.
    """
    particle_set = resolve_particle_set(particles)
    with_truth = "tp" in table.columns
    expected = "expected_particles" in table.columns  # calibrated scores
    head = ["particle type", "picks", *(["expected particles"] if expected else [])]
    head += ["score min", "score median", "score max"]
    if with_truth:
        head += ["truth", "TP", "FP", "FN", "precision", "recall", f"F{beta:g}", "weight"]
    cells = "".join(
        f'<th class="{"name" if i == 0 else ""}">{escape(h)}</th>' for i, h in enumerate(head)
    )
    rows = [f"<tr>{cells}</tr>"]
    for rec in table.to_dict("records"):
        values = [
            _swatch(rec["particle_type"], particle_set) + escape(rec["particle_type"]),
            _fmt(int(rec["n_picks"])),
            *([_fmt(rec["expected_particles"], 1)] if expected else []),
            _fmt(rec["score_min"]),
            _fmt(rec["score_median"]),
            _fmt(rec["score_max"]),
        ]
        if with_truth:
            values += [_fmt(int(rec["n_truth"]))]
            values += [_fmt(int(rec[k])) for k in ("tp", "fp", "fn")]
            values += [_fmt(rec[k]) for k in ("precision", "recall", "fbeta")]
            values += [f"{rec['weight']:g}"]
        tds = "".join(
            f'<td class="{"name" if i == 0 else ""}">{v}</td>' for i, v in enumerate(values)
        )
        rows.append(f'<tr data-particle="{escape(rec["particle_type"])}">{tds}</tr>')
    if with_truth:
        rows.append(
            f'<tr class="total"><td class="name">weighted F{beta:g} score</td>'
            f'<td colspan="{len(head) - 1}" id="weighted-score">{_fmt(score, 4)}</td></tr>'
        )
    note = _EXPECTED_NOTE if expected else ""
    return '<table id="summary-table">' + "".join(rows) + "</table>" + note


def _summary_json(table: pd.DataFrame, score: float | None) -> str:
    records = json.loads(table.to_json(orient="records"))
    text = json.dumps({"score": score, "per_class": records}, indent=1)
    return text.replace("</", "<\\/")


def _card_rows(card: ModelCard) -> str:
    skip = {"thresholds", "thresholds_tta", "validation", "learning_curve", "architecture"}
    skip.update(("train_config", "calibration", "calibration_tta"))
    values = card.model_dump(mode="json")
    values["target"] = str(card.target)  # e.g. "sphere r=0.5"
    rows = []
    for key, value in values.items():
        if key in skip:
            continue
        if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            shown = ", ".join(str(v) for v in value) or "&ndash;"  # e.g. patch_size
        elif isinstance(value, list):
            shown = "<br>".join(escape(str(v)) for v in value) or "&ndash;"
        elif isinstance(value, dict):
            shown = escape(json.dumps(value))
        elif isinstance(value, float):
            shown = _fmt(value, 4)
        else:
            shown = escape(str(value))
        rows.append(f'<tr><td class="name">{escape(key)}</td><td class="name">{shown}</td></tr>')
    return '<table id="model-card">' + "".join(rows) + "</table>"


def _validation_table(card: ModelCard) -> str:
    """Per-class thresholds (and TTA thresholds), validation and how scores are calibrated."""
    particle_set = card.particle_set
    by_name = {m.particle_type: m for m in card.validation}
    tta = card.thresholds_tta
    names = list(dict.fromkeys([*card.thresholds, *tta, *by_name]))
    if not names:
        return ""
    calibration = card.calibration
    head = ["particle type", "threshold", *(["threshold (TTA)"] if tta else [])]
    head += ["precision", "recall", "F-beta", "TP", "FP", "FN"]
    head += ["score calibration (candidates)"] if calibration else []
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for name in names:
        m = by_name.get(name)
        values = [_fmt(card.thresholds.get(name), 3)]
        values += [_fmt(tta.get(name), 3)] if tta else []
        values += [_fmt(getattr(m, k, None)) for k in ("precision", "recall", "fbeta")]
        values += [_fmt(getattr(m, k, None), 0) for k in ("tp", "fp", "fn")]
        if calibration:
            c = calibration.get(name)
            values += [f"{c.method} ({c.n_candidates})" if c else "&ndash;"]
        rows.append(
            f'<tr><td class="name">{_swatch(name, particle_set)}{escape(str(name))}</td>'
            + "".join(f"<td>{x}</td>" for x in values)
            + "</tr>"
        )
    return '<table id="model-validation">' + "".join(rows) + "</table>"


def render_model_section(card: ModelCard, figures: Mapping[str, bytes]) -> str:
    """Render the model card: overview, per-class thresholds and validation, learning curve."""
    parts = ['<section id="model"><h2>Model</h2>', _card_rows(card)]
    if card.score is not None:
        parts.append(f"<p>Validation weighted score: <b>{_fmt(card.score, 4)}</b></p>")
    parts.append(_validation_table(card))
    if "learning_curve.png" in figures:
        parts.append(
            "<figure>"
            + _img(figures, "learning_curve.png", "learning curve")
            + "<figcaption>Validation score during training.</figcaption></figure>"
        )
    for key, value in (
        ("architecture", card.architecture.model_dump(mode="json")),
        ("train_config", card.train_config),
    ):
        if value:
            parts.append(
                f"<details><summary>{escape(key)}</summary>"
                f"<pre>{escape(json.dumps(value, indent=2))}</pre></details>"
            )
    parts.append("</section>")
    return "\n".join(parts)


def _tomogram_figure(tomo: Any, figures: Mapping[str, bytes]) -> str:
    nz, ny, nx = tomo.shape
    return (
        f'<figure class="tomogram" data-run="{escape(tomo.name)}">'
        f"<h3>{escape(tomo.name)}</h3>"
        + _img(figures, montage_filename(tomo.name), f"slices of {tomo.name}")
        + f"<figcaption>{nz} &times; {ny} &times; {nx} voxels (z, y, x), "
        f"{tomo.spacing_A:.3f} &Aring;/voxel.</figcaption></figure>"
    )


def _class_section(figures: Mapping[str, bytes], particles: ParticleSet) -> str:
    parts = ['<section id="classes"><h2>Per class</h2>']
    class_figures = [n for n in figures if n.startswith("class_")]
    if not class_figures:
        parts.append("<p>No picks.</p>")
    for name in class_figures:
        particle = name.removeprefix("class_").removesuffix(".png")
        parts.append(
            f'<figure class="class" data-particle="{escape(particle)}">'
            f"<h3>{_swatch(particle, particles)}{escape(particle)}</h3>"
            + _img(figures, name, f"{particle}: metric vs threshold and score histogram")
            + "</figure>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def render_html(
    table: pd.DataFrame,
    score: float | None,
    figures: Mapping[str, bytes],
    card: ModelCard | None,
    config: Any,
    tomograms: Sequence[Any],
    sources: Mapping[str, Any],
    particles: ParticleSet | None = None,
) -> str:
    """Assemble the report page.

    Parameters
    ----------
    table, score
        From :func:`cryopick.report.summarise_picks_per_class`.
    figures : mapping of str to bytes
        PNGs by file name: ``montage_<run>.png``, ``class_<name>.png``, ``learning_curve.png``.
    card : ModelCard or None
        Model card.
    config : ReportConfig
        Display options (beta, slab).
    tomograms : sequence of Tomogram
        Shown tomograms, in order.
    sources : mapping
        Input paths by role, listed at the top.
    particles : ParticleSet, optional
        The particle types shown: their colours (default the CZII set).

    Returns
    -------
    str
        The HTML document.
    """
    particle_set = resolve_particle_set(particles)
    runs = ", ".join(t.name for t in tomograms[:20]) + (", ..." if len(tomograms) > 20 else "")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    inputs = "".join(
        f"<li>{escape(k)}: <code>{escape(str(v))}</code></li>"
        for k, v in sources.items()
        if v is not None
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>cryopick report</title><style>{_CSS}</style></head><body>",
        "<h1>cryopick report</h1>",
        f'<p class="meta">Generated {now}.</p><ul class="meta">{inputs}</ul>',
        '<section id="summary"><h2>Summary</h2>',
        render_summary_table(table, score, config.beta, particle_set),
        f'<p class="meta">Over the runs shown below ({escape(runs)}); with truth, the '
        "numbers <code>cryopick evaluate</code> gives for these runs.</p></section>",
        '<section id="tomograms"><h2>Tomograms</h2>',
        '<p class="meta">Each particle is drawn as the circle its sphere cuts from the slice '
        "(radius sqrt(R&sup2; &minus; d&sup2;) at distance d from its centre), in its class "
        "colour. Grey levels: 1st&ndash;99th percentile of each slice"
        + (f", mean of {config.slab_voxels} slices" if config.slab_voxels > 1 else "")
        + ".</p>",
        *(_tomogram_figure(tomo, figures) for tomo in tomograms),
        "</section>",
        _class_section(figures, particle_set),
    ]
    if card is not None:
        parts.append(render_model_section(card, figures))
    parts.append(
        '<script type="application/json" id="cryopick-summary">'
        + _summary_json(table, score)
        + "</script>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)
