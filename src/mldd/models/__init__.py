"""mldd.models."""
