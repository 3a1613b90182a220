"""mldd.optim."""
