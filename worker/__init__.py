"""arq worker: job functions and the sweeper."""
