"""A second look at candidate picks: a small network over each candidate's neighbourhood.

The segmentation network's peak value is one number at one voxel. A :class:`Rescorer`,
stored in the model card, reads a row of features per candidate
(:func:`cryopick.inference.rescoring.candidate_features`: the peak value, every class's
probability at and around the candidate, and with ``features="map+density"`` the
tomogram's radial density profile) and returns the probability that the candidate is a
true particle of its type. It is an average of small multilayer perceptrons (ReLU hidden
layers, one output per particle type; a candidate reads the output of its own type),
fitted on annotated simulations by :func:`cryopick.training.rescorer.fit_rescorer`.
Prediction then thresholds (and calibrates) the re-scored values. Plain numpy here: the
weights are numbers in the card's JSON (no pickled objects), and prediction needs no torch
for them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

FeatureSet = Literal["map", "map+density", "map+density+shape"]
"""Which features a rescorer reads: the probability map only, also the tomogram's radial
density profile around each candidate, or also orientation-free descriptors of the
density's shape (:mod:`cryopick.inference.shape_features`)."""


class DenseLayer(BaseModel):
    """One fully connected layer: ``out = in @ weight.T + bias``.

    Attributes
    ----------
    weight : list of list of float
        Shape (outputs, inputs).
    bias : list of float
        Length outputs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight: list[list[float]] = Field(min_length=1)
    bias: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_shapes(self) -> DenseLayer:
        weight = np.asarray(self.weight, dtype=np.float64)
        if weight.ndim != 2 or weight.shape[0] != len(self.bias):
            raise ValueError(f"weight {weight.shape} does not match {len(self.bias)} biases")
        if not (np.isfinite(weight).all() and np.isfinite(self.bias).all()):
            raise ValueError("weights and biases must be finite numbers")
        return self


class Rescorer(BaseModel):
    """Candidate features -> probability that the candidate is right, per particle type.

    Attributes
    ----------
    features : {"map", "map+density", "map+density+shape"}
        The features it reads (:data:`FeatureSet`); the first ``n_features`` columns of
        :func:`cryopick.inference.rescoring.candidate_features`.
    n_features : int
        Length of its feature rows.
    candidate_floor : float
        Candidates are the peaks whose raw value is at least this; the card's thresholds
        then apply to the re-scored values.
    class_names : list of str
        Particle types, in the order of the networks' outputs.
    mean, scale : list of float
        Standardisation of the features (``(x - mean) / scale``) before the networks.
    members : list of list of DenseLayer
        The networks averaged (their probabilities); each a list of layers.
    n_candidates : int
        Candidates the fit saw.
    training_data : list of str
        What it was fitted on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: FeatureSet = "map"
    n_features: int = Field(ge=1)
    candidate_floor: float = Field(0.05, ge=0.0, lt=1.0)
    class_names: list[str] = Field(min_length=1)
    mean: list[float]
    scale: list[float]
    members: list[list[DenseLayer]] = Field(min_length=1)
    n_candidates: int = Field(0, ge=0)
    training_data: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_shapes(self) -> Rescorer:
        if len(self.mean) != self.n_features or len(self.scale) != self.n_features:
            raise ValueError(f"mean and scale must have {self.n_features} values")
        if min(self.scale) <= 0.0:
            raise ValueError("scale values must be positive")
        n_inputs = self.n_features + len(self.class_names)
        for member in self.members:
            sizes = [n_inputs] + [len(layer.bias) for layer in member]
            for layer, n_in in zip(member, sizes[:-1], strict=True):
                if len(layer.weight[0]) != n_in:
                    raise ValueError(f"a layer takes {len(layer.weight[0])} inputs, not {n_in}")
            if sizes[-1] != len(self.class_names):
                raise ValueError(f"a network ends in {sizes[-1]} outputs, not one per type")
        return self

    def score(self, features: NDArray, class_names: list[str] | NDArray) -> NDArray[np.float64]:
        """Return the probability that each candidate is a true particle of its type.

        Parameters
        ----------
        features : numpy.ndarray, shape (N, F)
            Feature rows; the first ``n_features`` columns are read.
        class_names : sequence of str, length N
            Each candidate's particle type (one of ``class_names``).

        Returns
        -------
        numpy.ndarray, shape (N,)
            Probabilities in (0, 1).

        Raises
        ------
        ValueError
            For rows that are too short or a type the rescorer does not know.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] < self.n_features:
            raise ValueError(f"features must have {self.n_features} columns, not {x.shape}")
        index = self.class_index(class_names)
        x = (x[:, : self.n_features] - np.asarray(self.mean)) / np.asarray(self.scale)
        inputs = np.concatenate([x, np.eye(len(self.class_names))[index]], axis=1)
        probabilities = np.zeros(len(x))
        for member in self.members:
            logits = _forward(member, inputs)[np.arange(len(x)), index]
            probabilities += 1.0 / (1.0 + np.exp(-logits))
        return probabilities / len(self.members)

    def class_index(self, class_names: list[str] | NDArray) -> NDArray[np.int64]:
        """Return the output column of each name (ValueError for an unknown one)."""
        lookup = {name: i for i, name in enumerate(self.class_names)}
        unknown = sorted({str(n) for n in class_names} - set(lookup))
        if unknown:
            raise ValueError(f"the rescorer has no type {', '.join(unknown)}")
        return np.array([lookup[str(n)] for n in class_names], dtype=np.int64)


def _forward(layers: list[DenseLayer], x: NDArray) -> NDArray:
    """Apply the layers: ReLU after each but the last."""
    for i, layer in enumerate(layers):
        x = x @ np.asarray(layer.weight).T + np.asarray(layer.bias)
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x
