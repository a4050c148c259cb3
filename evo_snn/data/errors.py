"""The one error type that every data reader raises."""

from __future__ import annotations


class DatasetFormatError(ValueError):
    """A data file or data root is missing or malformed.

    The message names the file, the byte offset or line where reading failed, and
    what was expected there, e.g.
    ``/data/DvsGesture/user01_fluorescent.aedat: byte 4120: truncated packet payload ...``.
    """
