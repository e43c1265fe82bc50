"""sigstream's composition root: settings, the CLI and the wiring of engine/ to adapters/."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sigstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# Recordings and Kafka carry raw venue frames; the venues' adapters register how to read them.
import sigstream.codecs  # noqa: F401 - registers the venue codecs

# Engines build their policy from settings; the direction policy's model lives in adapters/model.
from sigstream.modes import direction as _direction_policy  # noqa: F401 - registers the direction policy
