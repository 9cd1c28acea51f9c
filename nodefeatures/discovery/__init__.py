"""Discovery: read one host and say what it has. No cluster, no command line.

docs/architecture.md lists the modules and the one direction imports may point.
"""
