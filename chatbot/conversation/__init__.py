"""One conversation's logic, shared by the app, the CLI and the server."""
