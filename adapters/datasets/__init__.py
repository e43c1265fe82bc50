"""Labelled financial-sentiment datasets: FPB, the financial-tweets set and any ``text,label`` CSV.

Use :func:`load_spec` with a spec string (``fpb:50``, ``fpb:50:test``, ``tfns``, ``path/to.csv``).
"""

from adapters.datasets.config import DatasetSettings
from adapters.datasets.loader import load_spec, load_specs, stratified_split
from adapters.datasets.parsing import BadRow, Example, LabelledSet

__all__ = ["BadRow", "DatasetSettings", "Example", "LabelledSet", "load_spec", "load_specs", "stratified_split"]
