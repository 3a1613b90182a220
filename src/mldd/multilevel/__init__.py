"""mldd.multilevel."""
