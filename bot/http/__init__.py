"""The HTTP API: every workflow as a typed endpoint over the same engine, queue and limits."""
