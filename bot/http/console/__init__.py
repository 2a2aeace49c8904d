"""The web console: server-rendered pages over the same engine, admission and keys as the API."""
