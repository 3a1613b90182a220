"""mldd.globalization."""
