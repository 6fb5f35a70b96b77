"""DVC stage 'explain': reads the composed params.yaml (or composes conf/ with the Hydra overrides given)."""

from mmp.cli import exit_now, stage_main

if __name__ == "__main__":
    exit_now(stage_main("explain"))
