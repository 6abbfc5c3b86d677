"""Many tomograms: one task per run, locally, on Dask or SLURM, resumable."""
