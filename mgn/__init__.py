"""MGN: Learning Discriminative Features with Multiple Granularity for Person Re-Identification.

The library: model, losses, data, evaluation and plain training functions. It imports neither Ray
nor MLflow; ``orchestration`` does.
"""

__version__ = "0.1.0"
