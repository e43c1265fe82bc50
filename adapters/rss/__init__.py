"""RSS/Atom news: a conditional-GET poller, feedparser parsing, and a local feed server for tests."""
