"""Jobs: what members asked for, durable in SQLite (or PostgreSQL), ordered fairly, driven on
ComfyUI."""
