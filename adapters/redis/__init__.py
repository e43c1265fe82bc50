"""Redis feature cache: settings, client, and the FeatureStore implementation."""
