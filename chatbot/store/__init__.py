"""The conversation store: every SQL statement of the project, its migrations and stats."""
