"""The python312 function server's parts (a package, so that a handler module named event or tracing does not shadow them)."""
