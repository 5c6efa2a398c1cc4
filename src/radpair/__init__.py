"""radpair: learn chest-radiograph encoders from their radiology reports.

The importable library (data, reports, models, objectives, evaluation) lives here;
training machinery and the command line live in :mod:`radpair_train`.
"""

__version__ = "0.1.0"
