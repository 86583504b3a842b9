"""The command line: the option table (config keys derive from it), config file, commands."""
