"""The stages: prepare, train and explain. The DVC stage scripts, the CLI and sweeps all call these.

Each stage checks its inputs before it starts an MLflow run, computes, writes its DVC outputs
atomically, then mirrors everything to its MLflow run. A mirror that the store interrupts is
recorded and replayed later by ``mmp mirror`` (:mod:`mmp.pipeline.replay`).

This module stays light: the stage scripts start the recorder process before they import the stages.
"""

RECORDER_MODULE = "mmp.pipeline.recorder_process"  # `python -m` runs it as a stage's MLflow recorder
STAGES = ("prepare", "train", "explain")
