"""mldd.decomposition."""
