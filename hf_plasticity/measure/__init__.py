"""Measuring plasticity: the estimator (both protocols), the theoretical bounds from live weights, and the
collectives that let several processes share one measurement.
Produces a :class:`~hf_plasticity.report.PlasticityReport`.
"""

from .estimator import measure_plasticity

__all__ = ["measure_plasticity"]
