"""The chat app's modal screens; each returns its result by dismissing."""
