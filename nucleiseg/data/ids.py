"""ImageIds as file names: the one check every reader applies before an id names an output file."""

from __future__ import annotations

import os

from ..errors import ImageIdError


def check_image_id(image_id: str, where: str = "") -> str:
    """Return ``image_id`` if it is a safe file name, else raise ImageIdError.

    Refused: empty, '.', '..', anything with '/', '\\' or NUL, absolute paths.
    """
    bad = (not image_id or image_id in (".", "..") or "/" in image_id or "\\" in image_id or "\x00" in image_id
           or os.path.isabs(image_id))
    if bad:
        raise ImageIdError(f"{where}ImageId {image_id!r} is not a plain file name; refused")
    return image_id
