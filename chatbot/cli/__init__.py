"""The command line: the option table (config keys derive from it), the config file, the commands."""
