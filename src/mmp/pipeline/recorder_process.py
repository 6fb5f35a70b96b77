"""The recorder process of a stage (:mod:`mmp.tracking.recorder`), given the stages' mirror functions."""

import sys
from collections.abc import Mapping

from mmp.tracking import MirrorFunction, recorder


def mirrors() -> Mapping[str, MirrorFunction]:
    from mmp.pipeline.replay import MIRRORS

    return MIRRORS


if __name__ == "__main__":
    recorder.main(sys.argv[1:], mirrors)
