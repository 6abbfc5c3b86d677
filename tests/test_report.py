"""Tests of ``cryopick report``: geometry of drawn picks, table values, page structure."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread
from typer.testing import CliRunner

from cryopick.cli import app
from cryopick.core.particles import default_particle_set
from cryopick.core.picks import make_picks
from cryopick.evaluation.metric import score_picks
from cryopick.io.mrc import write_mrc
from cryopick.io.picks import read_picks, write_picks
from cryopick.report import ReportConfig, classify_picks
from cryopick.report.figures import cut_spheres, layout_montage
from cryopick.report.slices import choose_slice_indices, read_slice

CZII = default_particle_set()
SPACING_A = 10.0
SHAPE = (40, 48, 64)  # z, y, x voxels
RUN = "TS_test"
Z_SLICE = 20  # the XY slice every test pick sits on (z = 200 Å)
PX_PER_VOXEL = 4
NO_VALUE = "\u2013"  # the en dash the page shows where a number has no meaning


def _truth_and_picks() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Truth particles and picks with known matches (zyx in Å)."""
    z = Z_SLICE * SPACING_A
    truth = pd.concat(
        [
            make_picks(RUN, "apo-ferritin", [[z, 120, 120], [z, 120, 400], [z, 360, 500]]),
            make_picks(RUN, "beta-galactosidase", [[z, 300, 200]]),
            make_picks(RUN, "thyroglobulin", [[100, 240, 320]]),
        ],
        ignore_index=True,
    )
    picks = pd.concat(
        [
            # TP on the first ferritin (10 Å off), a duplicate on it (FP), a far FP;
            # the ferritin at (360, 500) is missed
            make_picks(
                RUN,
                "apo-ferritin",
                [[z, 120, 130], [z, 125, 125], [z, 120, 400]],
                score=[0.9, 0.5, 0.8],
            ),
            make_picks(RUN, "apo-ferritin", [[z, 400, 150]], score=[0.3]),
            make_picks(RUN, "beta-galactosidase", [[z, 300, 200]], score=[0.7]),
            make_picks(RUN, "thyroglobulin", [[100, 240, 330]], score=[0.6]),
        ],
        ignore_index=True,
    )
    return truth, picks


def _volume(truth: pd.DataFrame) -> np.ndarray:
    """Noise with a dark ball at every truth particle (protein is dark)."""
    rng = np.random.default_rng(0)
    vol = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
    zz, yy, xx = np.indices(SHAPE) * SPACING_A
    for row in truth.itertuples():
        r2 = (zz - row.z) ** 2 + (yy - row.y) ** 2 + (xx - row.x) ** 2
        vol[r2 <= CZII.radius_A(row.particle_type) ** 2] -= 3.0
    return vol


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Known picks on a synthetic volume (one MRC), reported with truth on two XY slices."""
    root = tmp_path_factory.mktemp("report")
    truth, picks = _truth_and_picks()
    tomo = write_mrc(root / f"{RUN}.mrc", _volume(truth), SPACING_A)
    write_picks(truth, root / "truth.csv")
    write_picks(picks, root / "picks.csv")
    out = root / "report.html"
    png_dir = root / "png"
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(tomo),
            "--picks",
            str(root / "picks.csv"),
            "--truth",
            str(root / "truth.csv"),
            "--out",
            str(out),
            "--png-dir",
            str(png_dir),
            "--z",
            str(Z_SLICE),
            "--z",
            "10",
        ],
    )
    assert result.exit_code == 0, result.output
    return {"root": root, "tomo": tomo, "html": out, "png": png_dir}


def _derive_picks(truth: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Imperfect picks from truth: misses, jittered hits, duplicates and stray picks."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, row in enumerate(truth.itertuples()):
        radius_A = CZII.radius_A(row.particle_type)
        zyx = np.array([row.z, row.y, row.x])
        if i % 4 == 3:
            continue  # missed
        step = rng.normal(size=3)
        rows.append((row.particle_type, zyx + 0.2 * radius_A * step / np.linalg.norm(step)))
        if i % 5 == 0:
            rows.append((row.particle_type, zyx + 0.1 * radius_A))  # duplicate: a FP
    for name in sorted(set(truth["particle_type"])):
        rows.append((name, rng.uniform([0, 0, 0], [480, 960, 960])))  # stray: a FP
    names, coords = zip(*rows, strict=True)
    return make_picks(SIM_RUN, list(names), np.array(coords), score=rng.uniform(0.1, 1, len(rows)))


SIM_RUN = "sim_0000"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A simulated copick project (one easy run) with picks and a model card, reported."""
    from cryopick.model import ClassMetrics, ModelCard
    from cryopick.simulate import simulate_project

    root = tmp_path_factory.mktemp("simulated")
    config = simulate_project(
        root / "project", n_runs=1, seed=0, shape=(48, 96, 96), preset="easy", progress=False
    )
    truth = read_picks(config)
    write_picks(_derive_picks(truth), root / "picks.csv")
    model_dir = root / "model"
    model_dir.mkdir()
    card = ModelCard(
        training_data=["simulated:easy x4"],
        thresholds={"apo-ferritin": 0.42, "ribosome": 0.5},
        validation=[
            ClassMetrics(
                particle_type="apo-ferritin",
                precision=0.5,
                recall=0.75,
                fbeta=0.7234,
                tp=3,
                fp=3,
                fn=1,
            )
        ],
        score=0.6123,
        learning_curve=[(10.0, 100, 0.2), (20.0, 200, 0.5), (30.0, 300, 0.6)],
        train_config={"steps": 300},
    )
    (model_dir / "model.json").write_text(card.to_json())
    out = root / "report.html"
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(config),
            "--picks",
            str(root / "picks.csv"),
            "--truth",
            str(config),
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--png-dir",
            str(root / "png"),
            "--tomo-type",
            "denoised",
        ],
    )
    assert result.exit_code == 0, result.output
    return {"root": root, "config": config, "html": out, "png": root / "png", "model": model_dir}


class _PageParser(HTMLParser):
    """Collect images (by section), summary table cells and the embedded JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.section: str | None = None
        self.images: dict[str, list[str]] = {}
        self.rows: dict[str, list[str]] = {}
        self._row: str | None = None
        self._cell: list[str] | None = None
        self._json = False
        self.summary_json = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id")
        elif tag == "img":
            assert a["src"].startswith("data:image/png;base64,")
            self.images.setdefault(self.section, []).append(a["data-figure"])
        elif tag == "tr" and "data-particle" in a:
            self._row = a["data-particle"]
            self.rows[self._row] = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "script" and a.get("id") == "cryopick-summary":
            self._json = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[self._row].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "script":
            self._json = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._json:
            self.summary_json += data


def _parse(path: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text())
    return parser


def test_cut_spheres_gives_circle_of_the_slice_depth() -> None:
    centers = [[100.0, 50.0, 70.0], [100.0, 50.0, 70.0], [300.0, 0.0, 0.0]]
    xy, radii, visible = cut_spheres(centers, [60.0, 30.0, 60.0], "z", 136.0)
    assert visible.tolist() == [True, False, False]  # 36 Å > 30 Å; 164 Å > 60 Å
    np.testing.assert_allclose(xy, [[70.0, 50.0]])  # (x, y)
    np.testing.assert_allclose(radii, [48.0])  # sqrt(60² - 36²)
    xz, radii, _ = cut_spheres(centers[:1], 60.0, "y", 50.0)
    np.testing.assert_allclose(xz, [[70.0, 100.0]])  # (x, z)
    np.testing.assert_allclose(radii, [60.0])


def test_choose_slice_indices_are_bin_centres() -> None:
    assert choose_slice_indices(40, 4) == [5, 15, 25, 35]
    assert choose_slice_indices(3, 8) == [0, 1, 2]


def test_read_slice_reads_only_the_slab() -> None:
    class Recorder:
        """A lazy (z, y, x) array that remembers what it was asked for."""

        def __init__(self, vol: np.ndarray) -> None:
            self.vol, self.shape, self.keys = vol, vol.shape, []

        def __getitem__(self, key):
            self.keys.append(key)
            return self.vol[key]

    vol = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    rec = Recorder(vol)
    np.testing.assert_array_equal(read_slice(rec, "z", 2), vol[2])
    np.testing.assert_allclose(read_slice(rec, "z", 4, slab_voxels=3), vol[3:5].mean(0))
    np.testing.assert_array_equal(read_slice(rec, "y", 1), vol[:, 1])
    assert rec.keys == [slice(2, 3), slice(3, 5), (slice(None), slice(1, 2))]


def test_classify_picks_agrees_with_the_metric() -> None:
    truth, picks = _truth_and_picks()
    markers = classify_picks(picks, truth)
    ferritin = markers[markers.particle_type == "apo-ferritin"]
    # the 0.9 pick wins the first ferritin over the 0.5 duplicate
    assert ferritin.loc[ferritin.score == 0.9, "status"].item() == "tp"
    assert ferritin.loc[ferritin.score == 0.5, "status"].item() == "fp"
    assert ferritin.loc[ferritin.status == "fn", ["y", "x"]].values.tolist() == [[360, 500]]
    per_class = score_picks(truth, picks).per_class.set_index("particle_type")
    counts = markers.groupby(["particle_type", "status"]).size().unstack(fill_value=0)
    for name in ("apo-ferritin", "beta-galactosidase", "thyroglobulin"):
        for status in ("tp", "fp", "fn"):
            assert counts.loc[name].get(status, 0) == per_class.loc[name, status], (name, status)
    assert (classify_picks(picks, None).status == "pick").all()


def test_class_curves_mark_the_model_threshold() -> None:
    from cryopick.evaluation.metric import fbeta_curve
    from cryopick.report.plots import plot_class_curves

    truth, picks = _truth_and_picks()
    curve = fbeta_curve(truth, picks, "apo-ferritin")
    fig = plot_class_curves("apo-ferritin", curve, {"all": picks["score"]}, threshold=0.42)
    ax_curve, ax_hist = fig.axes
    f4 = next(line for line in ax_curve.lines if line.get_label() == "F4")
    # keeping all picks (threshold <= 0.3): 2 of 3 ferritins found by 4 picks
    expected_all = 17 * 0.5 * (2 / 3) / (16 * 0.5 + 2 / 3)
    assert f4.get_ydata()[0] == pytest.approx(expected_all)
    assert f4.get_ydata()[-1] == 0.0  # above the highest score nothing is kept
    for ax in (ax_curve, ax_hist):
        marks = [line for line in ax.lines if list(line.get_xdata()) == [0.42, 0.42]]
        assert len(marks) == 1


def test_tta_thresholds_are_shown_beside_the_plain_ones() -> None:
    from cryopick.evaluation.metric import fbeta_curve
    from cryopick.model import ModelCard
    from cryopick.report.html import render_model_section
    from cryopick.report.plots import plot_class_curves

    card = ModelCard(thresholds={"apo-ferritin": 0.42}, thresholds_tta={"apo-ferritin": 0.37})
    html = render_model_section(card, {})
    assert "<th>threshold</th><th>threshold (TTA)</th>" in html
    assert "<td>0.420</td><td>0.370</td>" in html and "thresholds_tta" not in html
    plain = render_model_section(card.model_copy(update={"thresholds_tta": {}}), {})
    assert "(TTA)" not in plain and "<td>0.420</td>" in plain
    truth, picks = _truth_and_picks()
    curve = fbeta_curve(truth, picks, "apo-ferritin")
    fig = plot_class_curves(
        "apo-ferritin", curve, {"all": picks["score"]}, threshold=0.42, tta_threshold=0.37
    )
    for ax in fig.axes:
        for value in (0.42, 0.37):
            assert len([ln for ln in ax.lines if list(ln.get_xdata()) == [value, value]]) == 1


def test_report_table_matches_evaluate(simulated: dict[str, Path]) -> None:
    truth = read_picks(simulated["config"])
    picks = read_picks(simulated["root"] / "picks.csv")
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--truth",
            str(simulated["config"]),
            "--picks",
            str(simulated["root"] / "picks.csv"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)
    expected = score_picks(truth, picks)
    assert evaluated["score"] == pytest.approx(expected.score, abs=1e-12)
    assert 0.2 < expected.score < 0.95  # the run has hits, misses and false positives
    page = _parse(simulated["html"])
    summary = json.loads(page.summary_json)
    assert summary["score"] == pytest.approx(evaluated["score"], abs=1e-12)
    by_name = {r["particle_type"]: r for r in summary["per_class"]}
    for name, row in evaluated["per_class"].items():
        for key in ("tp", "fp", "fn", "precision", "recall", "fbeta", "weight"):
            assert by_name[name][key] == pytest.approx(row[key]), (name, key)
        # visible cells: picks, min, median, max, truth, TP, FP, FN, P, R, F4, weight
        scores = picks.loc[picks.particle_type == name, "score"]
        cells = page.rows[name][1:]
        assert cells[0] == str(len(scores))
        if len(scores):
            stats = [scores.min(), scores.median(), scores.max()]
            assert cells[1:4] == [f"{v:.3f}" for v in stats]
        assert cells[4] == str((truth.particle_type == name).sum())
        assert cells[5:] == [
            str(row["tp"]),
            str(row["fp"]),
            str(row["fn"]),
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['fbeta']:.3f}",
            f"{row['weight']:g}",
        ]
    assert f"{evaluated['score']:.4f}" in simulated["html"].read_text()


def test_report_has_one_image_per_section(simulated: dict[str, Path]) -> None:
    page = _parse(simulated["html"])
    classes = [n for n in CZII.names if n in set(read_picks(simulated["config"]).particle_type)]
    assert len(classes) >= 2
    assert page.images == {
        "tomograms": [f"montage_{SIM_RUN}.png"],
        "classes": [f"class_{n}.png" for n in classes],
        "model": ["learning_curve.png"],
    }
    assert sorted(p.name for p in simulated["png"].iterdir()) == sorted(
        [f"montage_{SIM_RUN}.png", "learning_curve.png", *(f"class_{n}.png" for n in classes)]
    )
    text = simulated["html"].read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    for shown in ("simulated:easy x4", "0.420", "0.6123", "0.723"):  # card values
        assert shown in text


def _pixel(image: np.ndarray, col: float, row: float) -> np.ndarray:
    return image[int(np.floor(row)), int(np.floor(col)), :3]


def _ring_fraction(image, box, center_2d_A, radius_A, colour, n=180) -> float:
    """Fraction of points on a circle whose pixel has ``colour``."""
    hits = 0
    for angle in np.linspace(0, 2 * np.pi, n, endpoint=False):
        h = center_2d_A[0] + radius_A * np.cos(angle)
        v = center_2d_A[1] + radius_A * np.sin(angle)
        hits += np.abs(_pixel(image, *box.angstrom_to_pixel(h, v)) - colour).max() < 0.12
    return hits / n


def test_picks_are_drawn_at_their_place(project: dict[str, Path]) -> None:
    image = imread(project["png"] / f"montage_{RUN}.png")
    config = ReportConfig()
    boxes, size_px = layout_montage(
        [Z_SLICE, 10], SHAPE[1] // 2, SHAPE, SPACING_A, config.panel_width_px, config.n_columns
    )
    assert image.shape[:2] == (size_px[1], size_px[0])
    xy = boxes[0]
    assert (xy.axis, xy.index) == ("z", Z_SLICE)
    ferritin = np.array(to_rgb(CZII.colour("apo-ferritin")))
    r_A = CZII.radius_A("apo-ferritin")
    # the TP pick at (x, y) = (130, 120): rim at 60 Å in the class colour, centre not
    for dx, dy in ((r_A, 0), (-r_A, 0), (0, r_A), (0, -r_A)):
        pix = _pixel(image, *xy.angstrom_to_pixel(130 + dx, 120 + dy))
        np.testing.assert_allclose(pix, ferritin, atol=0.12)
    for dx in (0.0, 0.5 * r_A, 1.4 * r_A):
        pix = _pixel(image, *xy.angstrom_to_pixel(130 + dx, 120))
        assert np.abs(pix - ferritin).max() > 0.3
    # solid TP ring, dashed FP ring (the lone pick at (150, 400)), cross at the miss
    assert _ring_fraction(image, xy, (130, 120), r_A, ferritin) > 0.95
    assert 0.3 < _ring_fraction(image, xy, (150, 400), r_A, ferritin) < 0.8
    np.testing.assert_allclose(_pixel(image, *xy.angstrom_to_pixel(500, 360)), ferritin, atol=0.12)
    assert _ring_fraction(image, xy, (500, 360), r_A, ferritin) < 0.1
    # the thyroglobulin at z = 100 Å, R = 130 Å, shows on the z = 200 Å slice with
    # radius sqrt(130² - 100²) = 83 Å, and on the XZ slice (y = 240 Å) at full radius
    thyro = np.array(to_rgb(CZII.colour("thyroglobulin")))
    cut_A = np.sqrt(130.0**2 - 100.0**2)
    assert _ring_fraction(image, xy, (330, 240), cut_A, thyro) > 0.95
    assert _ring_fraction(image, xy, (330, 240), 130.0, thyro) < 0.1
    xz = boxes[-1]
    assert (xz.axis, xz.index) == ("y", SHAPE[1] // 2)
    assert _ring_fraction(image, xz, (330, 100), 130.0, thyro, n=90) > 0.6  # clipped at z < 0
    # the z = 100 Å slice misses the ferritins (|200 - 100| > 60 Å): no ferritin colour there
    panel = image[
        boxes[1].y0_px : boxes[1].y0_px + boxes[1].height_px,
        boxes[1].x0_px : boxes[1].x0_px + boxes[1].width_px,
        :3,
    ]
    assert not (np.abs(panel - ferritin).max(axis=-1) < 0.12).any()


def test_report_without_truth_or_model(project: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "plain.html"
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(project["tomo"]),
            "--picks",
            str(project["root"] / "picks.csv"),
            "--out",
            str(out),
            "--slices",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    page = _parse(out)
    assert "model" not in page.images and len(page.images["tomograms"]) == 1
    assert page.rows["apo-ferritin"][1:] == ["4", "0.300", "0.650", "0.900"]
    assert json.loads(page.summary_json)["score"] is None


def test_report_of_unscored_picks(project: dict[str, Path], tmp_path: Path) -> None:
    # truth scored against itself: no scores, so no curves, but the table still holds
    truth = str(project["root"] / "truth.csv")
    out = tmp_path / "self.html"
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(project["tomo"]),
            "--picks",
            truth,
            "--truth",
            truth,
            "--out",
            str(out),
            "--slices",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    page = _parse(out)
    assert json.loads(page.summary_json)["score"] == pytest.approx(5 / 7)  # weights 1 + 2 + 2
    assert page.rows["apo-ferritin"][1:9] == ["3", NO_VALUE, NO_VALUE, NO_VALUE, "3", "3", "0", "0"]
    assert len(page.images["classes"]) == 3


def test_report_shows_picks_of_another_name_on_a_single_tomogram(
    project: dict[str, Path], tmp_path: Path
) -> None:
    _, picks = _truth_and_picks()
    write_picks(picks.assign(experiment="TS_other"), tmp_path / "other.csv")
    out = tmp_path / "other.html"
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(project["tomo"]),
            "--picks",
            str(tmp_path / "other.csv"),
            "--out",
            str(out),
            "--slices",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert _parse(out).rows["apo-ferritin"][1] == "4"


def test_report_names_a_missing_model_card(project: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(project["tomo"]),
            "--picks",
            str(project["root"] / "picks.csv"),
            "--model",
            str(tmp_path),
            "--out",
            str(tmp_path / "r.html"),
        ],
    )
    assert result.exit_code == 2
    assert "model.json" in result.output and not (tmp_path / "r.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
# run in the page by Chromium once it has loaded: where the browser laid out the first
# montage, whether it decoded it, and the weighted score it shows; read back from the title
_PROBE = """<script>
addEventListener("load", () => {
  const img = document.querySelector("section#tomograms img");
  const box = img.getBoundingClientRect();
  document.title = JSON.stringify({
    x: box.left, y: box.top, width: box.width, height: box.height,
    decoded: img.complete && img.naturalWidth > 0,
    score: document.getElementById("weighted-score").textContent,
  });
});
</script>"""


def _chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--virtual-time-budget=10000",  # let the page load and run its scripts
        f"--user-data-dir={profile}",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (make chromium)")
def test_report_renders_in_headless_chromium(simulated: dict[str, Path], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(simulated["html"].read_text().replace("</body>", _PROBE + "</body>"))
    width = 1300
    dom = _chromium(page, tmp_path / "profile", f"--window-size={width},1600", "--dump-dom").stdout
    probe = json.loads(unescape(re.search(r"<title>(.*?)</title>", dom, re.DOTALL).group(1)))
    # the table as the browser shows it: the weighted score that `cryopick evaluate` gives
    expected = score_picks(
        read_picks(simulated["config"]), read_picks(simulated["root"] / "picks.csv")
    )
    assert probe["score"] == f"{expected.score:.4f}"
    assert probe["decoded"], probe
    x0, y0 = round(probe["x"]), round(probe["y"])
    x1, y1 = round(probe["x"] + probe["width"]), round(probe["y"] + probe["height"])
    assert probe["width"] > 200 and 0 <= x0 < x1 <= width and 0 <= y0 < y1, probe

    shot = tmp_path / "shot.png"
    height = max(1600, y1 + 16)  # the whole montage in the picture (the layout keeps its width)
    _chromium(page, tmp_path / "profile", f"--window-size={width},{height}", f"--screenshot={shot}")
    image = imread(shot)[..., :3]
    assert image.shape[:2] == (height, width)
    # where the montage sits: a grey-level tomogram slice (many grey levels, not uniform),
    # not a blank box or a broken-image icon
    montage = image[y0:y1, x0:x1]
    grey = montage.mean(axis=2)
    is_grey = np.ptp(montage, axis=2) < 0.02
    assert is_grey.mean() > 0.5  # the slice; coloured circles and captions are the rest
    assert grey[is_grey].std() > 0.08
    assert len(np.unique(np.round(grey[is_grey] * 255))) > 64
    shutil.copy(shot, simulated["root"] / "chromium_screenshot.png")  # to look at


def test_report_names_picks_outside_the_tomogram(
    project: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # picks of another, larger tomogram (or in other units): drawn nowhere, said nothing
    _, picks = _truth_and_picks()
    far = picks.assign(x=picks["x"] + 10_000.0)
    write_picks(far, tmp_path / "far.csv")
    out = tmp_path / "far.html"
    args = ["report", str(project["tomo"]), "--picks", str(tmp_path / "far.csv")]
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(app, [*args, "--out", str(out), "--slices", "1"])
    assert result.exit_code == 0, result.output
    warned = [r.getMessage() for r in caplog.records if "outside the tomogram" in r.getMessage()]
    assert len(warned) == 1 and f"far.csv: run {RUN}: {len(far)} of {len(far)} picks" in warned[0]
