"""The model layer: the catalogue of models (:mod:`.registry`), one adapter per library (:mod:`.adapters`),
fitted models (:mod:`.trained`), the one prediction path (:mod:`.predictor`) and the MLflow pyfunc
(:mod:`.pyfunc`, imported on its own: it loads MLflow)."""
