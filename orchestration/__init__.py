"""Ray Train workers, Ray Tune grids, MLflow records, the paper's tables, cluster submission.

The only package that imports Ray and MLflow; ``mgn`` stays a plain library.
"""
