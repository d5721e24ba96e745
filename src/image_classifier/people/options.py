"""What ``image-classifier group`` is asked to do, each option declared once (:mod:`image_classifier.optionspec`):
the parser, the Python keywords of :func:`~image_classifier.people.group_photos` and the checks come
from these fields. A light module: ``group --help`` reads it without loading dlib or numpy."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from image_classifier.errors import OptionError
from image_classifier.faces.thresholds import ATTACH_DISTANCE, CORE_DISTANCE, MIN_GROUP_SIZE
from image_classifier.optionspec import cache_dir_option, cache_option, check_options, option

if TYPE_CHECKING:
    from image_classifier.faces.clustering import ClusterParams


def _check_merge(merge: tuple[str, str]) -> tuple[str, str]:
    if len(merge) != 2 or merge[0] == merge[1]:
        raise OptionError(f"--merge takes two different groups, not {' '.join(merge)}")
    return tuple(merge)  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class GroupOptions:
    """How :func:`~image_classifier.people.group_photos` groups a folder; each field is the ``group``
    option of the same name (``--no-cache`` is ``cache=False``). Checked by :meth:`check`, before
    any photo is read."""

    min_size: int = option(MIN_GROUP_SIZE, metavar="N",
                           help="a new group needs at least N faces; faces of smaller ones go to singles/ "
                                "(default: %(default)s)")
    merge: tuple[str, str] | None = option(None, metavar=("A", "B"), nargs=2, check=_check_merge,
                                           help="merge group B into group A (folder names); A keeps its name")
    split: str | None = option(None, metavar="GROUP",
                               help="re-cluster one group tighter (a lower core distance, step by step) into two "
                                    "or more")
    copy: bool = option(False, help="copy the photos instead of linking to them")
    core_distance: float = option(CORE_DISTANCE, metavar="D",
                                  help="faces closer than D form a group's core (default: %(default)s, measured: "
                                       "see docs/benchmarks.md)")
    attach_distance: float = option(ATTACH_DISTANCE, metavar="D",
                                    help="a face outside every core joins the nearest group whose centre is closer "
                                         "than D (default: %(default)s, dlib's same-person distance)")
    cache: bool = cache_option()
    cache_dir: str | os.PathLike | None = cache_dir_option()
    progress: bool = option(True, help="no progress bars")
    seed: int = option(0, cli=False, help="the order in which the clustering visits the faces")

    def params(self) -> ClusterParams:
        """The clustering's settings (an OptionError for values it cannot work with)."""
        # Here, not at the top: the clustering loads numpy, which ``group --help`` does without.
        from image_classifier.faces.clustering import ClusterParams

        try:
            return ClusterParams(self.core_distance, self.attach_distance, self.min_size, self.seed)
        except ValueError as err:
            raise OptionError(str(err)) from None

    def check(self) -> GroupOptions:
        """Every option's own check and the clustering's; returns self."""
        check_options(self)
        self.params()
        return self
