"""The project's exception types.

Every reader in nucleiseg raises a subclass of :class:`NucleisegError` whose message names
the file (or ImageId) and the problem, so a batch job can report it and go on.
"""

from __future__ import annotations


class NucleisegError(Exception):
    """Base class of every error nucleiseg raises on purpose."""


class ImageReadError(NucleisegError):
    """An image file is missing, empty, truncated, not an image, or of an unsupported type."""


class AnnotationError(NucleisegError):
    """A DSB2018 annotation folder or label image cannot be turned into a label image."""


class RLEError(NucleisegError):
    """A Kaggle run-length encoding or CSV file is malformed."""


class ModelFileError(NucleisegError):
    """A model file is missing, not a nucleiseg model, or does not match its configuration."""


class ImageIdError(NucleisegError):
    """An ImageId is not a plain file name (path separators, '..', absolute path) and could
    escape an output folder."""


class MissingDependencyError(NucleisegError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""
