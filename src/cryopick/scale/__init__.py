"""Many runs: :func:`cryopick.scale.predict.predict_runs` (behind ``cryopick predict``).

In this process, or as one resumable task per run, locally, on Dask or SLURM.
"""
