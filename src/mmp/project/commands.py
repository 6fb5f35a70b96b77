"""The project commands of the ``mmp`` CLI: init, get-recipe, list, validate, plots.

Only argparse at import time: each handler imports what it needs, so that ``mmp --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

ConfigFrom = Callable[[argparse.Namespace], Any]  # the CLI's one way from -c/-r/-d/overrides to a Config


def cmd_list(args: argparse.Namespace) -> None:
    from mmp.config import project_root
    from mmp.errors import ConfigError
    from mmp.project.catalog import catalog

    try:
        root = project_root()
    except ConfigError:
        root = None  # models and metrics are listed anywhere; recipes and data need a project
    print(catalog(args.topic, root, args.name))


def add_commands(
    commands: Any, add_config_options: Callable[[argparse.ArgumentParser], None], config_from: ConfigFrom
) -> None:
    """Register the project commands on the CLI's subparsers."""
    from mmp.project.catalog import TOPICS

    listing = commands.add_parser("list", help="the catalog: models, recipes, data sets or metrics")
    listing.add_argument("topic", choices=TOPICS, help="what to list")
    listing.add_argument("name", nargs="?", help="models only: one model's hyperparameters and defaults")
    listing.set_defaults(func=cmd_list)

    def cmd_validate(args: argparse.Namespace) -> None:
        from mmp.project.validate import validate

        print(validate(config_from(args)))

    validate = commands.add_parser(
        "validate", help="check config and data as `mmp train` would, without training (same errors)"
    )
    add_config_options(validate)
    validate.set_defaults(func=cmd_validate)
