"""mldd.subproblem."""
