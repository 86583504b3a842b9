"""The Textual app: the App, its stylesheet, widgets and modal screens."""
