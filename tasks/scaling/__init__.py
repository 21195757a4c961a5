"""Scaling-law extrapolation: forms registry, batched multi-start fitting, run bootstrap,
rolling-origin validation against naive baselines. Entry points: :func:`fit_curve`, :func:`fit_report`."""

from tasks.scaling.api import CurveFit, FitReport, fit_curve, fit_report
from tasks.scaling.forms import FORMS, get_form

__all__ = ["CurveFit", "FitReport", "fit_curve", "fit_report", "FORMS", "get_form"]
