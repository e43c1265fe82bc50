"""Test-wide set-up: the venue codecs are registered as the composition root registers them."""

import sigstream.codecs  # noqa: F401 - registers the venue codecs for tests that use adapters directly
