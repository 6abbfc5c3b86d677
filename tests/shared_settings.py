"""Settings of the shared fixtures in conftest.py, for tests that re-derive their data.

(A module of its own: ``conftest`` is not importable by name, tests/copick_interop has one too.)
"""

import torch
from torch import nn

from cryopick.core.particles import default_particle_set

#: How the ``small_simulated_project`` fixture is simulated (run i from SeedSequence([seed, i])).
SMALL_PROJECT = {"n_runs": 6, "seed": 3, "shape": (32, 48, 48), "preset": "easy"}
#: The score threshold of ``tiny_untrained_model_dir`` for every class: an untrained network's
#: probabilities are low, so this gives picks to compare between code paths.
TINY_MODEL_THRESHOLD = 0.15
#: A few steps of a 3-level U-Net (widths 4, 8, 16) on 32-voxel patches, one thread, no
#: validation: the training runs of the tests (as TrainConfig fields; update per test).
TINY_TRAINING = {
    "architecture": {"widths": (4, 8, 16)},
    "patch_size": (32, 32, 32),
    "batch_size": 1,
    "steps": 6,
    "checkpoint_every": 2,
    "validate_every": 0,
    "warmup_steps": 2,
    "threads": 1,
}


class DarkBlobDetector(nn.Module):
    """Pointwise 'network' for picking tests: dark voxels -> apo-ferritin, else background.

    On a normalised tomogram with dark blobs, the apo-ferritin probability peaks (~0.55)
    on the blobs; any test that needs real picks from a known 'model' uses it.
    """

    output_stride = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros((x.shape[0], 7, *x.shape[2:]), dtype=x.dtype)
        logits[:, default_particle_set().label("apo-ferritin")] = -2.0 * x[:, 0] - 8.0
        return logits
