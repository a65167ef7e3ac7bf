"""The stateless harness: rebuilds context from the log, calls the model, dispatches tools."""
