"""Starting a project (issue 16): `mmp init` from an empty folder, a data config from a file, then `mmp train`
and `dvc repro` there, and the offline `dvc plots show` page rendered by headless Chromium with no network.

The templates are symlinks to this repository's own conf/, recipes/, stages/ and dvc.yaml (one source of
truth); the fast tests check that, and what `mmp init` refuses.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_browser import browser  # noqa: F401  (the headless Chromium fixture)

from conftest import REPO, Project, clean_env, printed_run_id
from mmp.project import scaffold
from mmp.project.data_config import profile, render

MARKS = ".vega-embed .mark-symbol path, .vega-embed .mark-line path, .vega-embed .mark-rect path"


def write_data(path: Path, rows: int = 240) -> Path:
    """A small binary data set with an id column and a constant column; 'y' depends on x1 and colour."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    y = np.where(x1 + (colour == "red") + 0.3 * rng.normal(size=rows) > 0.5, "yes", "no")
    lines = ["row_id,x1,x2,colour,source,y"]
    lines += [f"{1000 + i},{x1[i]:.4f},{x2[i]:.4f},{colour[i]},survey,{y[i]}" for i in range(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- fast


def test_templates_are_the_repository_files() -> None:
    """One source of truth: the packaged templates resolve to the repository's own files."""
    for name, repo_path in {
        "conf": "conf",
        "recipes": "recipes",
        "stages": "stages",
        "dvc.yaml": "dvc.yaml",
        "env.example": ".env.example",
        "dvcignore": ".dvcignore",
    }.items():
        assert (scaffold.TEMPLATES / name).resolve() == (REPO / repo_path).resolve(), name
    assert set(scaffold.COPIED) <= {p.name for p in scaffold.TEMPLATES.iterdir()}


def test_project_dvc_yaml_drops_only_the_source_deps() -> None:
    import yaml

    repo = yaml.safe_load((REPO / "dvc.yaml").read_text())
    project = yaml.safe_load(scaffold.project_dvc_yaml((REPO / "dvc.yaml").read_text()))
    assert project["plots"] == repo["plots"]
    for name, stage in repo["stages"].items():
        mine = project["stages"][name]
        assert mine["deps"] == [d for d in stage["deps"] if not str(d).startswith("src/")]
        assert {k: v for k, v in mine.items() if k != "deps"} == {k: v for k, v in stage.items() if k != "deps"}
        assert f"stages/{name}.py" in mine["deps"]


def test_data_config_flags_id_and_constant_columns(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data" / "survey.csv")
    text = render(profile(data, "y", tmp_path))
    assert "id_columns: [row_id]" in text and "drop_columns: [source]" in text
    assert re.search(r"#\s+row_id .*ID-LIKE", text) and re.search(r"#\s+source .*CONSTANT", text)
    assert "path: data/survey.csv" in text and 'positive_class: "yes"' in text
    assert "Task read off the target: binary" in text


def test_init_refuses_a_non_empty_folder_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmp.cli import main

    (tmp_path / "notes.txt").write_text("mine")
    code = main(["init", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1
    assert "is not empty" in err and "--force" in err


def test_init_data_needs_a_real_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmp.cli import main

    data = write_data(tmp_path / "d.csv")
    assert main(["init", str(tmp_path / "p"), "--data", str(data)]) != 0
    assert "--data FILE and --target COLUMN go together" in capsys.readouterr().err
    (tmp_path / "p" / "conf").mkdir(parents=True)
    shutil.copy(REPO / "conf" / "config.yaml", tmp_path / "p" / "conf" / "config.yaml")
    assert main(["init", str(tmp_path / "p"), "--data", str(data), "--target", "label"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Target column 'label' is not in" in err


# --------------------------------------------------------------------------- a new project, end to end


@pytest.fixture(scope="module")
def new_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """`mmp init` in an empty folder, a data file, `mmp init --data` and `dvc repro` there."""
    parent = tmp_path_factory.mktemp("init")
    outside = Project(parent, clean_env())
    result = outside.mmp("init", "survey-project")
    assert "Created an mmp project" in result.stdout
    project = Project(parent / "survey-project", clean_env())
    write_data(project.root / "data" / "survey.csv")
    project.mmp("init", "--data", "data/survey.csv", "--target", "y")
    project.dvc("repro")
    return project


@pytest.mark.slow
def test_init_scaffold(new_project: Project) -> None:
    root = new_project.root
    for name in (".git", ".dvc", "conf/config.yaml", "recipes/xgb-baseline.yaml", "stages/train.py", "dvc.yaml"):
        assert (root / name).exists(), name
    for name in ("params.yaml", ".gitignore", ".env.example", "README.md", "conf/data/survey.yaml"):
        assert (root / name).is_file(), name
    assert "enabled = True" in (root / ".dvc" / "config").read_text()  # dvc exp run -S composes conf/
    assert (root / "conf" / "recipe" / "xgb-baseline.yaml").is_file()
    assert "- data: survey" in (root / "conf" / "config.yaml").read_text()
    assert "src/" not in (root / "dvc.yaml").read_text()
    log = new_project.git("log", "--format=%s", "--name-only").stdout
    assert log.startswith("New mmp project (mmp init)") and "stages/train.py" in log  # dvc exp run needs a commit


@pytest.mark.slow
def test_dvc_repro_in_a_new_project(new_project: Project) -> None:
    metrics = new_project.metrics()
    assert metrics.get("test", {}).get("roc_auc", metrics.get("test_roc_auc", 0)) > 0.8
    assert {run.data.tags["mmp.stage"] for run in new_project.runs()} >= {"prepare", "train", "explain"}
    train = new_project.runs("train")[0]
    assert train.data.tags["mmp.data"] == "survey"
    assert new_project.dvc("status").stdout.strip().endswith("up to date.")
    manifest = json.loads((new_project.root / "data" / "prepared" / "manifest.json").read_text())
    assert "row_id" not in manifest["features"] and "source" not in manifest["features"]


@pytest.mark.slow
def test_mmp_train_in_a_new_project(new_project: Project) -> None:
    result = new_project.mmp("train", "-d", "data/survey.csv", "data.target=y")
    assert "MLflow run id:" in result.stdout
    run_id = printed_run_id(result.stdout)
    run = new_project.client().get_run(run_id)
    assert run.data.metrics["test_roc_auc"] > 0.8
    assert new_project.dvc("status").stdout.strip().endswith("up to date.")  # mmp train left DVC's outputs


@pytest.mark.slow
def test_offline_plots_render_in_chromium(new_project: Project, browser: Any) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    new_project.mmp("plots")
    page = new_project.root / "dvc_plots" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=[\"']?https?:", html)  # no library from a CDN
    assert "vegaEmbed(" in html
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*"]})
    try:
        browser.get(page.as_uri())
        expected = html.count("vegaEmbed('#")
        assert expected >= 5  # ROC, precision-recall, confusion, learning curve, importances, SHAP

        def rendered(driver: Any) -> bool:
            return len(driver.find_elements(By.CSS_SELECTOR, ".vega-embed svg, .vega-embed canvas")) >= expected

        WebDriverWait(browser, 30).until(rendered)
        marks = browser.execute_script(f"return document.querySelectorAll({MARKS!r}).length")
        assert marks > 0  # data drawn, not just empty axes
        (new_project.root / "dvc_plots" / "offline.png").write_bytes(browser.get_screenshot_as_png())
    finally:
        browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
