"""The published models kneel knows by name: where each release archive is, what it must hold, its terms.

One entry per name. ``PINNED_SHA256`` holds the sha256 an archive must have to be installed; ``None`` while the
project has not pinned one (the hash of what was installed is recorded in the model folder either way).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelSource", "MODELS", "PINNED_SHA256", "get_source", "pinned_sha256"]


@dataclass(frozen=True)
class ModelSource:
    """A published release archive and how it becomes a kneel model folder.

    Args:
        name: the name users give (``--model kneel-2019``).
        description: one line for ``kneel models list``.
        url: where the authors publish the archive.
        archive_name: the archive's file name (``--from`` takes any name).
        mean_std: path of the channel statistics inside the release folder.
        stages: stage (``lc``/``hc``) -> snapshot folder inside the release folder.
        folds: the folds each snapshot folder must hold (``fold_<k>_epoch_<e>.pth``).
        terms: the licence terms and the citation, written beside the weights; its first paragraph is the notice
            ``kneel predict`` prints.
    """

    name: str
    description: str
    url: str
    archive_name: str
    mean_std: str
    stages: tuple[tuple[str, str], ...]
    folds: tuple[int, ...]
    terms: str


_CITATION = (
    'Tiulpin A., Melekhov I., Saarakkala S. "KNEEL: Knee Anatomical Landmark Localization Using Hourglass Networks", '
    "ICCV 2019 Workshops (VRMI), pp. 352-361, doi:10.1109/ICCVW.2019.00046, arXiv:1907.12237."
)

_KNEEL_2019_TERMS = f"""\
kneel-2019: the published KNEEL models (Tiulpin, Melekhov, Saarakkala, 2019), for non-commercial research use only.
Whoever uses them must cite: {_CITATION}

Terms
The KNEEL code and models are made available by their authors (University of Oulu, https://github.com/MIPT-Oulu/KNEEL)
for non-commercial research purposes only; commercial use is not allowed. They were trained on radiographs of the
Osteoarthritis Initiative (OAI). kneel's MIT licence covers kneel's code, not these weights: converting them into
kneel's format changes neither their terms nor their authorship. They are not a medical device.

BibTeX
@inproceedings{{tiulpin2019kneel,
  title     = {{KNEEL: Knee Anatomical Landmark Localization Using Hourglass Networks}},
  author    = {{Tiulpin, Aleksei and Melekhov, Iaroslav and Saarakkala, Simo}},
  booktitle = {{Proceedings of the IEEE/CVF International Conference on Computer Vision Workshops (ICCVW)}},
  pages     = {{352--361}},
  year      = {{2019}}
}}
"""

MODELS: dict[str, ModelSource] = {
    "kneel-2019": ModelSource(
        name="kneel-2019",
        description="KNEEL 2019 release: 5-fold low-cost and high-cost hourglass ensembles (Tiulpin et al.)",
        url="http://mipt-ml.oulu.fi/models/KNEEL/snapshots_release.tar.xz",
        archive_name="snapshots_release.tar.xz",
        mean_std="mean_std.npy",
        stages=(("lc", "lext-devbox_2019_07_14_16_04_41"), ("hc", "lext-devbox_2019_07_14_19_25_40")),
        folds=(0, 1, 2, 3, 4),
        terms=_KNEEL_2019_TERMS,
    ),
}

# name -> the sha256 (hex) its archive must have; None: not pinned yet (any archive with the right layout installs).
PINNED_SHA256: dict[str, str | None] = {"kneel-2019": None}


def get_source(name: str) -> ModelSource | None:
    """The catalogue entry of ``name``, or ``None`` when kneel knows no model by that name."""
    return MODELS.get(name)


def pinned_sha256(name: str) -> str | None:
    """The sha256 the archive of ``name`` must have, or ``None`` when the project pins none."""
    value = PINNED_SHA256.get(name)
    return None if value is None else value.lower()
