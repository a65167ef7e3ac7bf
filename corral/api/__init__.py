"""HTTP surface: one module per resource, plus auth, errors, pagination and SSE."""
