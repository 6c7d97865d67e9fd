"""Using a trained run folder: loading its model, embedding passages, predicting and scoring. Shared by
``serve``, the ``predict`` and ``evaluate-model`` commands and training's own evaluation; nothing here trains."""
