"""The project commands of the ``mmp`` CLI: init, get-recipe, list, validate, plots.

Only argparse at import time: each handler imports what it needs, so that ``mmp --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

TOPICS = ("models", "recipes", "data", "metrics")  # `mmp list TOPIC`; the catalog module is imported when run
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
    add_more_commands(commands)


def cmd_init(args: argparse.Namespace) -> None:
    """A new project in DIR; with --data, a data config from the file (in DIR's project, or in the new one)."""
    from pathlib import Path

    from mmp.config import CONFIG_DIR, CONFIG_NAME
    from mmp.errors import ConfigError
    from mmp.project import scaffold
    from mmp.project.data_config import write_data_config

    if bool(args.data) != bool(args.target):
        raise ConfigError("--data FILE and --target COLUMN go together; give both")
    root = Path(args.directory).expanduser().resolve()
    existing = (root / CONFIG_DIR / f"{CONFIG_NAME}.yaml").is_file()
    if not (existing and args.data):  # a data config for an existing project needs no scaffold
        print(scaffold.describe(scaffold.init_project(root, force=args.force)))
    if args.data:
        written = write_data_config(root, Path(args.data), args.target, name=args.name, force=args.force)
        scaffold.set_default(root, "data", written.stem)
        scaffold.write_params(root)
        print(f"wrote {written} and made it the default data set (conf/config.yaml, params.yaml)")
        print("  mmp validate    # check config and data, nothing trained")


def cmd_get_recipe(args: argparse.Namespace) -> None:
    import sys
    from pathlib import Path

    from mmp.config import project_root
    from mmp.project import recipe_builder

    root = project_root()
    answers = recipe_builder.answers_from_flags(
        args.name, args.model, args.task, args.param, args.encoding, args.primary
    )
    if not args.no_input and sys.stdin.isatty() and sys.stdout.isatty():
        answers = recipe_builder.ask_missing(root, answers)
    recipe = recipe_builder.build(root, answers)
    output = Path(args.output) if args.output else None
    written = recipe_builder.write_recipe(root, recipe, output, force=args.force)
    print(f"wrote {written}")
    print(f"  mmp validate recipe={written.stem}    # or: mmp train recipe={written.stem}")


def cmd_plots(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mmp.config import project_root
    from mmp.project import plots

    if args.template_only:
        print(f"wrote {plots.write_template(Path(args.template_only))}")
        return
    plots.show(project_root(), args.dvc_args)


def add_more_commands(commands: Any) -> None:
    init = commands.add_parser(
        "init",
        help="start a project: git, DVC (Hydra on), conf/, recipes/, dvc.yaml, params.yaml; --data adds a data set",
        epilog="examples:\n  mmp init my-project\n  mmp init --data data/churn.csv --target churned   # in a project",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    init.add_argument("directory", nargs="?", default=".", metavar="DIR", help="the project folder (default: .)")
    init.add_argument("--data", metavar="FILE", help="a CSV or Parquet file: writes conf/data/<name>.yaml from it")
    init.add_argument("--target", metavar="COLUMN", help="the target column of --data")
    init.add_argument("--name", help="the data set's name (default: the file's name)")
    init.add_argument("--force", action="store_true", help="scaffold into a non-empty folder; overwrite a data config")
    init.set_defaults(func=cmd_init)

    recipe = commands.add_parser(
        "get-recipe",
        help="write a recipe: asked in a terminal, or from flags (--no-input)",
        description="Each flag answers one question; in a terminal the others are asked, elsewhere defaults apply.",
    )
    recipe.add_argument("--name", help="recipe name (default: <model>-custom)")
    recipe.add_argument("--model", help="model.name (see `mmp list models`)")
    recipe.add_argument("--task", help="auto | binary | multiclass | regression")
    recipe.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a hyperparameter")
    recipe.add_argument("--encoding", help="categorical encoding: auto | native | onehot | ordinal")
    recipe.add_argument("--primary", help="primary metric (see `mmp list metrics`; default: auto)")
    recipe.add_argument("-o", "--output", metavar="FILE", help="default: recipes/<name>.yaml")
    recipe.add_argument("--force", action="store_true", help="overwrite an existing recipe file")
    recipe.add_argument("--no-input", action="store_true", help="ask nothing: flags and defaults only")
    recipe.set_defaults(func=cmd_get_recipe)

    plots = commands.add_parser(
        "plots",
        help="dvc plots show, with Vega inline: the page renders with no internet",
        description="Runs `dvc plots show --html-template <offline template> [DVC_ARGS]` in the project root.",
    )
    plots.add_argument("--template-only", metavar="FILE", help="only write the template (for dvc plots diff ...)")
    plots.add_argument("dvc_args", nargs=argparse.REMAINDER, metavar="DVC_ARGS", help="passed to dvc plots show")
    plots.set_defaults(func=cmd_plots)
