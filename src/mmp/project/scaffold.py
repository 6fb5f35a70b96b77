"""``mmp init``: a new project with git and DVC (Hydra on), the shipped config groups and recipes, the
stage scripts, ``dvc.yaml``, the composed ``params.yaml``, ``.gitignore``, ``.env.example`` and a README.

The templates ship inside the package (``mmp/project/templates``). In this repository they are symlinks to
the repository's own ``conf/``, ``recipes/``, ``stages/``, ``dvc.yaml``, ``.env.example`` and
``.dvcignore``: one source of truth, copied into the wheel when it is built.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mmp.config import CONFIG_DIR, PARAMS_FILE, compose, dump_yaml
from mmp.errors import ConfigError, MmpError
from mmp.files import write_text_atomic

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
RECIPE_LINK = Path(CONFIG_DIR) / "recipe"  # the recipe group lives in recipes/, linked into conf/
# template name -> name in the new project
COPIED = {
    "conf": "conf",
    "recipes": "recipes",
    "stages": "stages",
    "env.example": ".env.example",
    "dvcignore": ".dvcignore",
    "gitignore": ".gitignore",
}
_REPO_ONLY_DEP = re.compile(r"^\s*- src/")  # dvc.yaml deps on this repository's own source folders
_PARAMS_HEADER = "# Composed from conf/ by `mmp init`; `dvc exp run` rewrites it, `mmp compose -o params.yaml` too.\n"


@dataclass(frozen=True)
class InitResult:
    root: Path


def project_dvc_yaml(text: str) -> str:
    """This repository's dvc.yaml for a project that has no mmp source: the stages depend on their
    scripts (and data, params), not on ``src/mmp``; the repository's header comment is dropped."""
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    body = "".join(line for line in lines if not _REPO_ONLY_DEP.match(line))
    return "# Stages read the composed params.yaml (`dvc exp run -S ...` recomposes it from conf/).\n" + body


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(
            source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "recipe"), dirs_exist_ok=True
        )
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _link_recipes(root: Path) -> None:
    link = root / RECIPE_LINK
    if link.is_symlink() or link.exists():
        return
    try:
        link.symlink_to(Path("..") / "recipes", target_is_directory=True)
    except OSError:  # no symlinks (some Windows setups): a copy, which `mmp get-recipe` also writes to
        shutil.copytree(root / "recipes", link)


def _run(args: list[str], root: Path) -> None:
    result = subprocess.run(args, cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split())[:300]
        raise MmpError(f"`{' '.join(args[2:] if args[0] == sys.executable else args)}` failed in {root}: {detail}")


def _init_vcs(root: Path) -> None:
    """git, then DVC with its Hydra integration on (``dvc exp run -S`` composes conf/ into params.yaml)."""
    if shutil.which("git") is None:
        raise MmpError("git is not installed; install git, then run mmp init again")
    if not (root / ".git").exists():
        _run(["git", "init", "-q"], root)
    dvc = [sys.executable, "-m", "dvc"]
    if not (root / ".dvc").is_dir():
        _run([*dvc, "init", "-q"], root)
    _run([*dvc, "config", "hydra.enabled", "True"], root)
    _run([*dvc, "config", "core.analytics", "false"], root)


def write_params(root: Path) -> None:
    """params.yaml composed from the project's conf/: what `dvc repro` reads until `dvc exp run` rewrites it."""
    write_text_atomic(root / PARAMS_FILE, _PARAMS_HEADER + dump_yaml(compose(root)))


def set_default(root: Path, group: str, option: str) -> None:
    """Make ``option`` the default of ``group`` in conf/config.yaml's defaults list (comments kept)."""
    path = root / CONFIG_DIR / "config.yaml"
    text = path.read_text(encoding="utf-8")
    new, count = re.subn(rf"^(\s*-\s*{re.escape(group)}\s*:\s*)[^\s#]+", rf"\g<1>{option}", text, count=1, flags=re.M)
    if count != 1:
        raise ConfigError(f"{path} has no '- {group}: ...' line in its defaults list; add one")
    write_text_atomic(path, new)


def init_project(target: Path, *, force: bool = False) -> InitResult:
    """Scaffold a project in ``target`` (created if missing). A non-empty folder is refused unless ``force``;
    files already there are kept except those the scaffold writes."""
    root = target.expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{target} is a file; give a folder for the new project")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise ConfigError(f"{target} is not empty; pick an empty or new folder, or pass --force to scaffold into it")
    root.mkdir(parents=True, exist_ok=True)
    for source, name in COPIED.items():
        _copy(TEMPLATES / source, root / name)
    _link_recipes(root)
    dvc_yaml = project_dvc_yaml((TEMPLATES / "dvc.yaml").read_text(encoding="utf-8"))
    write_text_atomic(root / "dvc.yaml", dvc_yaml)
    readme = root / "README.md"
    if not readme.exists():
        text = (TEMPLATES / "README.md").read_text(encoding="utf-8")
        readme.write_text(text.replace("{name}", root.name), encoding="utf-8")
    (root / "data").mkdir(exist_ok=True)
    _init_vcs(root)
    write_params(root)
    _first_commit(root)
    return InitResult(root)


def _first_commit(root: Path) -> None:
    """Commit the scaffold (only its own files): `dvc exp run` needs a commit to start from. Without a git
    identity the commit is left to the user, with a line saying so."""
    ours = [*COPIED.values(), str(RECIPE_LINK), "dvc.yaml", PARAMS_FILE, "README.md", ".dvc"]
    subprocess.run(["git", "add", "--", *ours], cwd=root, capture_output=True)
    result = subprocess.run(["git", "commit", "-q", "-m", "New mmp project (mmp init)"], cwd=root, capture_output=True)
    if result.returncode != 0:
        log.warning("The scaffold is not committed (no git identity?); commit it before `dvc exp run`")


def describe(result: InitResult) -> str:
    shown = os.path.relpath(result.root) if result.root.is_relative_to(Path.cwd()) else str(result.root)
    cd = "" if result.root == Path.cwd().resolve() else f"cd {shown} && "
    return "\n".join(
        [
            f"Created an mmp project in {shown}/ (git and DVC initialised; conf/, recipes/, stages/, dvc.yaml, "
            "params.yaml, .gitignore, .env.example, README.md)",
            "Next:",
            f"  {cd}mmp init --data data/<file>.csv --target <column>   # a data config, made the default",
            "  mmp train -d data/<file>.csv data.target=<column>          # or train on a file straight away",
            "  dvc repro                                                  # the DVC pipeline",
        ]
    )
