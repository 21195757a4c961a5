"""Scaling-law extrapolation: forms registry, batched multi-start fitting, run bootstrap,
rolling-origin validation against naive baselines. Entry points: :func:`fit_curve`, :func:`fit_report`;
for repeated data, :func:`effective_data` (Muennighoff et al. 2023's D' = U + U R* (1 - exp(-R/R*)))."""

from tasks.scaling.api import CurveFit, FitReport, fit_curve, fit_report
from tasks.scaling.forms import FORMS, R_STAR_D, R_STAR_N, effective_data, get_form, repetitions

__all__ = ["CurveFit", "FitReport", "fit_curve", "fit_report", "FORMS", "get_form", "effective_data", "repetitions",
           "R_STAR_D", "R_STAR_N"]
