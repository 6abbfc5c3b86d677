"""The demo behind ``make demo``: simulate, predict, evaluate, report, print the score.

Run as ``python -m cryopick.demo [OUT_DIR]`` (default ``demo_out``). Everything is made on
the spot from a fixed seed, so a fresh machine needs no data: one realistic simulated
tomogram (``czii`` preset), picked with the bundled model, scored against the simulator's
exact truth with the CZII metric, and drawn in an HTML report.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from rich.console import Console

DEMO_SEED = 20261124
DEMO_SHAPE = (184, 384, 384)

log = logging.getLogger(__name__)


def run_demo(out_dir: str | Path = "demo_out", shape: tuple[int, int, int] = DEMO_SHAPE) -> float:
    """Simulate one tomogram, pick it with the bundled model, score it and write a report.

    Parameters
    ----------
    out_dir : str or Path
        Folder for the simulated project, the picks, the report and its PNGs.
    shape : tuple of int
        Simulated tomogram shape (z, y, x) at 10 Å.

    Returns
    -------
    float
        The weighted CZII F4 score of the picks.
    """
    from cryopick.console import format_score_table
    from cryopick.evaluation.metric import score_picks
    from cryopick.inference.pipeline import bundled_model_dir, predict
    from cryopick.io.picks import read_picks
    from cryopick.report import write_report
    from cryopick.simulate import simulate_project

    console = Console()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    model_dir = bundled_model_dir()

    console.print(f"[bold]1/4 simulating[/] one {shape} tomogram (czii preset, seed {DEMO_SEED})")
    config = simulate_project(
        out_dir / "project", n_runs=1, seed=DEMO_SEED, shape=shape, preset="czii", overwrite=True
    )  # the demo's own project: replaced on every run

    console.print(f"[bold]2/4 predicting[/] with the bundled model ({model_dir})")
    picks_csv = out_dir / "picks.csv"
    picks = predict(config, model_dir=model_dir, output=picks_csv, format="csv", show_progress=True)

    console.print("[bold]3/4 evaluating[/] against the simulator's exact truth")
    truth = read_picks(config, user_id="simulation")
    result = score_picks(truth, picks)
    console.print(format_score_table(result))

    console.print("[bold]4/4 writing the report[/]")
    report = write_report(
        config,
        picks_csv,
        out_dir / "report.html",
        truth_path=config,  # the project holds only the simulator's picks
        model_dir=model_dir,
        png_dir=out_dir / "report_png",
    )

    console.print(
        f"\n[bold green]weighted F4 = {result.score:.4f}[/]  "
        f"({time.perf_counter() - t0:.0f} s; picks: {picks_csv}; report: {report})"
    )
    return result.score


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m cryopick.demo [OUT_DIR]``."""
    from cryopick.console import LOG_FORMAT
    from cryopick.core.errors import InputError

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    args = sys.argv[1:] if argv is None else argv
    try:
        run_demo(args[0] if args else "demo_out")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
