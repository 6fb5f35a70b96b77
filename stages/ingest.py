"""DVC stage 'ingest': snapshots a SQL or remote source to data.snapshot (see docs/configuration.md)."""

from mmp.cli import exit_now, stage_main

if __name__ == "__main__":
    exit_now(stage_main("ingest"))
