"""Typed errors, so callers can catch what went wrong and every message can name its fix."""

from __future__ import annotations


class PlasticityError(Exception):
    """Base class of every error hf_plasticity raises on purpose."""


class UnsupportedModelError(PlasticityError, TypeError):
    """The model has no component map: it cannot be measured or tuned."""


class InvalidInputError(PlasticityError, ValueError):
    """Data or arguments the model or the estimator cannot take (shape, channels, values)."""


class EmptyDataError(InvalidInputError):
    """A data source holds no examples."""


class NotEnoughPairsError(InvalidInputError):
    """The data cannot supply the number of pairs asked for."""


class UnknownComponentError(PlasticityError, ValueError):
    """A component name that is not one of the registered component types."""


class ReportFormatError(PlasticityError, ValueError):
    """A report file that is not a readable hf_plasticity report (corrupt, foreign or too new)."""


class MissingDataError(PlasticityError, FileNotFoundError):
    """A data set's files are not on this machine; the message says which package provides them."""


class InPlaceAdapterError(PlasticityError, ValueError):
    """An operation that needs the original weights, on an adapter that trained them in place."""


class OverlappingPairsError(PlasticityError, ValueError):
    """Two reports to merge measured some of the same pairs: merging would count them twice."""
