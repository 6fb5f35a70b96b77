"""``mmp plots``: ``dvc plots show`` with a page that renders with no internet.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN. This writes an ``--html-template`` that
carries them inline instead, bundled by the ``vl-convert-python`` package (the libraries are inside its
wheel; nothing is downloaded), and leaves out DVC's ``{scripts}`` placeholder, which is where the CDN tags go.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mmp.errors import MmpError
from mmp.files import write_text_atomic

VEGA_LITE = "5.21"  # DVC's plot templates are Vega-Lite v5 specs
TEMPLATE_DIR = Path(".dvc") / "tmp"  # git-ignored by DVC itself

_PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC Plot (offline)</title>
    <!-- Vega {vega}, Vega-Lite {vega_lite} and Vega-Embed {embed}, inline (vl-convert-python {vl_convert}) -->
    <script>(function () {{
{bundle}
}})();</script>
    <style>
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def offline_template() -> str:
    """The page template: DVC fills ``{plot_divs}`` (one ``vegaEmbed`` call per plot) and ``{refresh_tag}``."""
    from importlib.metadata import version

    import vl_convert as vlc

    # A classic script (DVC's per-plot scripts call window.vegaEmbed synchronously), wrapped in a function so
    # that the bundle's top-level names cannot collide with those scripts' `var spec`.
    bundle = vlc.javascript_bundle(vl_version=VEGA_LITE).replace("</script", "<\\/script")
    return _PAGE.format(
        bundle=bundle,
        vega=vlc.get_vega_version(),
        vega_lite=VEGA_LITE,
        embed=vlc.get_vega_embed_version(),
        vl_convert=version("vl-convert-python"),
    )


def template_path(root: Path) -> Path:
    """Where the template is cached: one file per vl-convert version (building the bundle takes seconds)."""
    from importlib.metadata import version

    return root / TEMPLATE_DIR / f"mmp-offline-plots-{version('vl-convert-python')}.html"


def write_template(path: Path) -> Path:
    write_text_atomic(path, offline_template())
    return path


def show(root: Path, dvc_args: Sequence[str]) -> Path:
    """Run ``dvc plots show --html-template <offline template> ARGS`` in ``root``; return the template."""
    template = template_path(root)
    if not template.is_file():
        write_template(template)
    command = [sys.executable, "-m", "dvc", "plots", "show", "--html-template", str(template), *dvc_args]
    if subprocess.run(command, cwd=root).returncode != 0:
        raise MmpError("dvc plots show failed (its message is above); run `dvc repro` first if there are no plots")
    return template
