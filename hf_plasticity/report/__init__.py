"""The measurement's result: :class:`PlasticityReport` (statistics, ranking, JSON), and beside it its tables,
figures, stored bounds and the time series a training callback records.

The report sits below :mod:`hf_plasticity.measure` in the import order: the estimator builds reports, and
everything above (selection, cards, CLI) reads them without needing the estimator.
"""

from .report import ComponentStat, PlasticityReport
from .series import PlasticitySeries

__all__ = ["ComponentStat", "PlasticityReport", "PlasticitySeries"]
