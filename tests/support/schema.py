"""The signal JSON Schema (``schemas/signal.v1.schema.json``) as a test helper."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SIGNAL_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "signal.v1.schema.json"


@cache
def signal_validator() -> Draft202012Validator:
    """The schema, checked against the 2020-12 metaschema and compiled once."""
    schema = json.loads(SIGNAL_SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def validate_signal(record: dict[str, Any]) -> None:
    """Raise :class:`jsonschema.ValidationError` (the most relevant error) unless ``record`` is a v1 signal."""
    signal_validator().validate(record)
