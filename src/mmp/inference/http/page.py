"""The HTML page at ``/``: the model card and a form to try a prediction, for a person with a browser.

Self-contained (inline CSS and JavaScript, no external assets). Every value from the model is escaped
with :func:`html.escape`; the input schema reaches the script as JSON that cannot close its ``<script>``.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

TOP_FEATURES = 10

_CSS = """
:root { color-scheme: light dark; --accent: #2f6fde; --muted: #777; --line: #8884; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1.5rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.sub { color: var(--muted); margin: 0 0 1rem; }
.grid { display: grid; gap: 1.5rem; grid-template-columns: repeat(auto-fit, minmax(22rem, 1fr)); }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top; }
#model-card th { white-space: nowrap; }
.num { font-variant-numeric: tabular-nums; text-align: right; }
code { font-size: .9em; overflow-wrap: anywhere; }
.bar-row { align-items: center; display: grid; gap: .5rem; grid-template-columns: 9rem 1fr 4.5rem; margin: .2rem 0; }
.bar-label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar-track { background: var(--line); border-radius: 3px; height: .8rem; }
.bar { background: var(--accent); border-radius: 3px; height: 100%; }
.bar-value { font-variant-numeric: tabular-nums; text-align: right; }
form label { display: block; margin: .5rem 0; }
form label span { display: block; font-weight: 600; }
form label small { color: var(--muted); font-weight: normal; }
input, select, button { box-sizing: border-box; font: inherit; padding: .3rem .4rem; width: 100%; }
button { background: var(--accent); border: 0; border-radius: 4px; color: #fff; cursor: pointer; margin-top: .5rem; }
button:disabled { opacity: .6; }
#result { border: 1px solid var(--line); border-radius: 4px; margin-top: 1rem; min-height: 2rem; padding: .5rem; }
#result.error { border-color: #c33; color: #c33; }
.prediction { font-size: 1.3rem; font-weight: 700; }
footer { color: var(--muted); margin-top: 2rem; }
"""

# Reads the schema from the JSON block, posts the form as one record and shows the answer. Values from
# the server are set with textContent only, never as HTML.
_SCRIPT = """
(function () {
  "use strict";
  const schema = JSON.parse(document.getElementById("mmp-schema").textContent);
  const form = document.getElementById("predict-form");
  const button = document.getElementById("predict-button");
  const result = document.getElementById("result");

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function record() {
    const row = {};
    for (const column of schema) {
      const raw = document.getElementById("field-" + column.name).value.trim();
      if (raw === "") row[column.name] = null;
      else if (column.type === "number") row[column.name] = Number(raw);
      else row[column.name] = raw;
    }
    return row;
  }

  function showPrediction(body) {
    result.className = "";
    const value = typeof body.prediction === "number" ? Number(body.prediction.toPrecision(6)) : body.prediction;
    result.replaceChildren(element("div", "prediction", String(value)));
    if (!body.probabilities) return;
    for (const [name, p] of Object.entries(body.probabilities)) {
      const row = element("div", "bar-row");
      const track = element("div", "bar-track");
      const bar = element("div", "bar");
      bar.style.width = (100 * p).toFixed(1) + "%";
      track.appendChild(bar);
      row.append(element("span", "bar-label", name), track, element("span", "bar-value", (100 * p).toFixed(1) + "%"));
      result.appendChild(row);
    }
  }

  function showError(text) {
    result.className = "error";
    result.replaceChildren(element("div", "", text));
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const headers = {"Content-Type": "application/json"};
    const token = document.getElementById("api-token");
    if (token && token.value.trim()) headers["Authorization"] = "Bearer " + token.value.trim();
    button.disabled = true;
    result.className = "";
    result.textContent = "Predicting\\u2026";
    try {
      const response = await fetch("predict", {method: "POST", headers: headers, body: JSON.stringify(record())});
      let body = null;
      try { body = await response.json(); } catch (_) { body = null; }
      if (response.ok && body) showPrediction(body);
      else if (body && body.message) showError((body.error_code || response.status) + ": " + body.message);
      else showError("HTTP " + response.status + " " + response.statusText);
    } catch (error) {
      showError("The server did not answer: " + error);
    } finally {
      button.disabled = false;
    }
  });
})();
"""


def render_page(metadata: dict[str, Any], *, token_required: bool) -> str:
    """The page for ``metadata`` (the ``/metadata`` body); with a token field when the server wants one."""
    title = f"{metadata.get('model_class') or 'model'} · {metadata.get('target') or ''}"
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)} · mmp</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            "<header>",
            f"<h1>{escape(str(metadata.get('model_class') or 'Model'))}</h1>",
            f'<p class="sub">Predicts <b>{escape(str(metadata.get("target") or "?"))}</b> '
            f"({escape(str(metadata.get('task') or '?'))}) · recipe {escape(str(metadata.get('recipe') or '?'))} "
            f"· data {escape(str(metadata.get('data') or '?'))}</p>",
            "</header>",
            '<div class="grid">',
            "<section>",
            _card(metadata),
            _metrics(metadata.get("metrics") or {}),
            _features(metadata.get("top_features") or []),
            "</section>",
            "<section>",
            _form(metadata.get("input_schema") or [], token_required),
            "</section>",
            "</div>",
            '<footer>API: <a href="openapi.json">openapi.json</a> · <a href="metadata">metadata</a> · '
            '<a href="health">health</a> · POST <code>/predict</code>, <code>/explain</code>, '
            "<code>/invocations</code></footer>",
            f'<script type="application/json" id="mmp-schema">{_json_for_script(metadata.get("input_schema") or [])}'
            "</script>",
            f"<script>{_SCRIPT}</script>",
            "</body>",
            "</html>",
        ]
    )


def _card(metadata: dict[str, Any]) -> str:
    classes = metadata.get("classes")
    rows = [
        ("Run id", metadata.get("run_id")),
        ("Model URI", metadata.get("model_uri")),
        ("Model class", metadata.get("model_class")),
        ("Recipe", metadata.get("recipe")),
        ("Data set", metadata.get("data")),
        ("Task", metadata.get("task")),
        ("Target", metadata.get("target")),
        ("Classes", ", ".join(map(str, classes)) if classes else None),
        ("Decision threshold", metadata.get("decision_threshold")),
        ("Calibration", metadata.get("calibration")),
    ]
    body = "".join(
        f"<tr><th>{escape(label)}</th><td><code>{escape(str(value))}</code></td></tr>"
        for label, value in rows
        if value not in (None, "")
    )
    return f'<h2>Model</h2><table id="model-card">{body}</table>'


def _metrics(metrics: dict[str, Any]) -> str:
    """The test metrics (all metrics when there is no test split)."""
    shown = {name[len("test_") :]: value for name, value in metrics.items() if name.startswith("test_")}
    heading = "Test metrics"
    if not shown:
        shown, heading = dict(metrics), "Metrics"
    if not shown:
        return ""
    body = "".join(
        f'<tr><td>{escape(str(name))}</td><td class="num">{escape(_number(value))}</td></tr>'
        for name, value in sorted(shown.items())
    )
    return f'<h2>{heading}</h2><table id="metrics"><tr><th>metric</th><th class="num">value</th></tr>{body}</table>'


def _features(features: list[dict[str, Any]]) -> str:
    """The top features by mean |SHAP|, as bars scaled to the largest."""
    features = features[:TOP_FEATURES]
    if not features:
        return ""
    largest = max(abs(float(f.get("mean_abs_shap") or 0.0)) for f in features) or 1.0
    rows = []
    for item in features:
        value = abs(float(item.get("mean_abs_shap") or 0.0))
        name = escape(str(item.get("feature")))
        rows.append(
            f'<div class="bar-row"><span class="bar-label" title="{name}">{name}</span>'
            f'<div class="bar-track"><div class="bar" style="width: {100 * value / largest:.1f}%"></div></div>'
            f'<span class="bar-value">{escape(_number(value))}</span></div>'
        )
    return f'<h2>Top features <small>(mean |SHAP|)</small></h2><div id="top-features">{"".join(rows)}</div>'


def _form(schema: list[dict[str, Any]], token_required: bool) -> str:
    fields = [_field(column) for column in schema]
    if token_required:
        fields.append(
            '<label for="api-token"><span>API token <small>bearer token this server requires</small></span>'
            '<input id="api-token" name="api-token" type="password" autocomplete="off"></label>'
        )
    return (
        '<h2>Try a prediction</h2><form id="predict-form" novalidate>'
        + "".join(fields)
        + '<button id="predict-button" type="submit">Predict</button></form>'
        + '<div id="result" role="status" aria-live="polite"></div>'
    )


def _field(column: dict[str, Any]) -> str:
    name = str(column.get("name"))
    ident = escape(f"field-{name}")
    hint = "may be empty" if column.get("nullable") else "required"
    if "categories" in column:
        options = ['<option value=""></option>'] + [
            f'<option value="{escape(str(c))}">{escape(str(c))}</option>' for c in column["categories"]
        ]
        control = f'<select id="{ident}" name="{escape(name)}">{"".join(options)}</select>'
        kind = "category"
    elif column.get("type") == "number":
        control = f'<input id="{ident}" name="{escape(name)}" type="number" step="any" inputmode="decimal">'
        kind = "number"
    else:
        control = f'<input id="{ident}" name="{escape(name)}" type="text">'
        kind = "text"
    return f'<label for="{ident}"><span>{escape(name)} <small>{kind}, {hint}</small></span>{control}</label>'


def _json_for_script(value: Any) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' that could end it or open a comment."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _number(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)
