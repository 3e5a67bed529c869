"""Where a collection of labeled images comes from, and under which licence.

Two public collections are recognised by the names of their images, from lists that ship with
nucleiseg: DSB2018 stage1_train (its committed validation ImageIds, ``dsb2018_validation.txt``)
and MoNuSeg 2018 (the names of its train and test images, ``monuseg2018.csv``). Any other
collection is recorded with the name and licence the user gives, or as of unknown licence. A
folder written by ``nucleiseg convert`` carries its provenance in ``provenance.json``; model files
record the provenance of every collection they were trained on.

Licences: DSB2018 stage1_train, CC0 1.0 (Caicedo et al., Nature Methods 16, 2019,
https://bbbc.broadinstitute.org/BBBC038); MoNuSeg 2018, CC BY-NC-SA 4.0 (Kumar et al., IEEE TMI
36(7), 2017 and 39(5), 2020, https://monuseg.grand-challenge.org), whose terms carry over to
anything trained on it.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable

from .split import validation_ids

PROVENANCE_FILE = "provenance.json"
UNKNOWN_LICENCE = "unknown (give it with --licence)"


@dataclass(frozen=True)
class Provenance:
    """Attributes
    ----------
    name : str
        The collection, e.g. "DSB2018 stage1_train".
    licence : str
        Its licence, e.g. "CC0 1.0".
    source : str
        Where it can be found (URL), or the folder it was read from.
    citation : str
        What to cite ("" when unknown).
    """

    name: str
    licence: str
    source: str
    citation: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Provenance":
        return cls(**{k: str(v) for k, v in d.items()})

    def __str__(self) -> str:
        return f"{self.name} ({self.licence})"


DSB2018 = Provenance("DSB2018 stage1_train", "CC0 1.0", "https://bbbc.broadinstitute.org/BBBC038",
                     "Caicedo et al., Nature Methods 16, 1247-1253, 2019")
MONUSEG2018 = Provenance("MoNuSeg 2018", "CC BY-NC-SA 4.0", "https://monuseg.grand-challenge.org",
                         "Kumar et al., IEEE TMI 36(7), 1550-1560, 2017; Kumar et al., IEEE TMI 39(5), 1380-1391, 2020")


@lru_cache(maxsize=1)
def monuseg2018_images() -> dict[str, dict[str, str]]:
    """{image name: {"split": "train" | "test", "organ": ..., "validation": "yes" | "no"}} of MoNuSeg 2018."""
    text = resources.files("nucleiseg.data").joinpath("monuseg2018.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {row["name"]: {k: row[k] for k in ("split", "organ", "validation")} for row in rows}


def monuseg2018_validation_ids() -> frozenset[str]:
    """The MoNuSeg 2018 training images nucleiseg holds out for validation: one per organ, the
    first by SHA-1 of its name (7 of 30)."""
    return frozenset(name for name, row in monuseg2018_images().items() if row["validation"] == "yes")


def identify(root: str | os.PathLike, image_ids: Iterable[str], name: str | None = None,
             licence: str | None = None) -> Provenance:
    """The provenance of the collection in ``root`` holding ``image_ids``.

    In order: what ``name`` / ``licence`` say (the user's word); ``root/provenance.json``; a
    recognised public collection (a split of it is named, e.g. "MoNuSeg 2018 test"); else the
    folder's name with an unknown licence.
    """
    root = Path(root)
    ids = set(image_ids)
    found = None
    if (root / PROVENANCE_FILE).is_file():
        found = Provenance.from_dict(json.loads((root / PROVENANCE_FILE).read_text())["provenance"])
    elif ids and ids <= set(monuseg2018_images()):
        splits = sorted({monuseg2018_images()[i]["split"] for i in ids})
        found = replace(MONUSEG2018, name=f"{MONUSEG2018.name} {'/'.join(splits)}")
    elif ids & validation_ids():
        found = DSB2018
    found = found or Provenance(root.name, UNKNOWN_LICENCE, str(root))
    return replace(found, name=name or found.name, licence=licence or found.licence)
