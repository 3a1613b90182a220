"""mldd.quasinewton."""
