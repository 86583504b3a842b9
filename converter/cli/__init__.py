"""The `converter` command: argument parsing, and the one place errors become `error: ...`."""
