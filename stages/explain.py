"""DVC stage 'explain': reads the composed params.yaml (or composes conf/ with the Hydra overrides given)."""

import sys

from mmp.cli import stage_main

if __name__ == "__main__":
    sys.exit(stage_main("explain"))
