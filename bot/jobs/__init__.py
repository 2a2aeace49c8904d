"""Jobs: what members asked for, durable in SQLite, ordered fairly, driven on ComfyUI."""
