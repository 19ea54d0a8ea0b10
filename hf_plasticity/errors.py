"""Typed errors, so callers can catch what went wrong and every message can name its fix."""

from __future__ import annotations


class PlasticityError(Exception):
    """Base class of every error hf_plasticity raises on purpose."""


class UnsupportedModelError(PlasticityError, TypeError):
    """The model has no component map: it cannot be measured or tuned."""


class UnsupportedPlacementError(UnsupportedModelError):
    """Weights placed where the estimator cannot read them (meta tensors no Accelerate hook loads, a device
    asked of a model Accelerate dispatched); the message names how to load or place the model instead."""


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


class NonFiniteError(InvalidInputError):
    """NaN or infinite pixels, weights or rates; the message names the image, layer or weight."""


class PlasticityWarning(UserWarning):
    """Base class of the warnings hf_plasticity gives (results to read with care, nothing failed)."""


class LegacyReportWarning(PlasticityWarning):
    """A report saved by an older version, whose numbers follow an older definition."""


class SmallSampleWarning(PlasticityWarning):
    """Too few pairs for the statistics asked of them (a 95% interval needs at least two)."""


class OutputPathError(PlasticityError, ValueError):
    """An output path that cannot be written, or that would overwrite an input or another output."""


class HubUnreachableError(MissingDataError):
    """A name that is neither local nor in the cache, while the Hugging Face Hub cannot be reached."""


class AdapterLoadError(InvalidInputError):
    """A saved adapter that cannot be loaded onto this model: missing or corrupt files, or another model's shape."""


class OverlappingPairsError(PlasticityError, ValueError):
    """Two reports to merge measured some of the same pairs: merging would count them twice."""


class ModelCardError(PlasticityError, ValueError):
    """A card cannot be built or merged (no plasticity information, or an unreadable existing README)."""


class ExportError(PlasticityError, ValueError):
    """A model that cannot be exported the way asked (e.g. no plasticity adapter to merge)."""


class HubPushError(PlasticityError, RuntimeError):
    """A push did not happen: the Hub refused it, failed, or could not be reached. Nothing was committed."""


class HubAuthError(HubPushError, PermissionError):
    """No token, or a token the Hub refuses (401/403)."""


class IncompatibleReportsError(PlasticityError, ValueError):
    """Two reports to merge measured different models, protocols or component sets: their rates do not add up."""


class ComponentMapError(PlasticityError, ValueError):
    """A component map that is incomplete, or registered over another one for the same ``model_type``."""


class AdapterCombinationError(PlasticityError, ValueError):
    """Several plasticity adapters merged or run together, though each replaces the same modules whole."""


class MissingExtraError(PlasticityError, ImportError):
    """A feature whose optional dependencies are not installed; the message names the ``pip install`` extra."""


class UnsupportedVersionError(PlasticityError, ImportError):
    """An installed library (PEFT above all) lacks a name hf_plasticity relies on; the message names the range."""


class UnsupportedVersionWarning(PlasticityWarning):
    """Running with a library version outside the supported range, as asked (hf_plasticity.compat.ALLOW_ENV)."""
