"""``mmp validate``: the checks ``mmp train`` makes before it trains, and nothing else."""

from __future__ import annotations

from mmp.config import Config
from mmp.model.registry import check_model_name, check_params, class_name
from mmp.pipeline.prepare import check_inputs


def validate(config: Config) -> str:
    """Check the recipe's model and hyperparameters, then the data as the prepare stage does (same
    functions, same one-line errors); return a short summary. Nothing is written or tracked."""
    spec = check_model_name(config.recipe.model.name)
    check_params(spec, config.recipe.model.params, config.seed)  # what `mmp train` checks first
    inputs = check_inputs(config, spec)
    cleaned, parts, features = inputs.checked, inputs.parts, inputs.features
    classes = f", classes: {', '.join(cleaned.classes)}" if cleaned.classes else ""
    rows = " / ".join(f"{name} {part.height}" for name, part in parts.items())
    return "\n".join(
        [
            f"OK: config and data are valid; `mmp train` would train {class_name(spec, cleaned.task)}.",
            f"  data    {config.data.name}: {config.data.path} ({cleaned.rows} rows, {len(features)} features)",
            f"  target  {config.data.target} ({cleaned.task}{classes})",
            f"  recipe  {config.recipe.name} (model.name {config.recipe.model.name})",
            f"  split   {rows}",
        ]
    )
