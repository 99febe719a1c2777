"""Closed-form theory of Wang et al. for deep linear networks (science.md §2), numpy float64.

Data are ``x_NxD`` (rows are samples; the paper's X is its transpose) with integer ``labels_N``;
weights are lists [W_1, ..., W_L] in the paper's (out x in) layout.
"""

from theory.assumptions import AssumptionReport, check_assumptions
from theory.closed_form import (
    layer_features,
    min_norm_balanced,
    min_norm_product,
    one_hot_KxN,
)
from theory.rates import RatePrediction, predict_rates

__all__ = [
    "AssumptionReport",
    "RatePrediction",
    "check_assumptions",
    "layer_features",
    "min_norm_balanced",
    "min_norm_product",
    "one_hot_KxN",
    "predict_rates",
]
