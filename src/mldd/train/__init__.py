"""mldd.train."""
