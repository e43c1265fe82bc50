"""A live dashboard page: per symbol, price with signal markers, the latest features and recent scored news."""
