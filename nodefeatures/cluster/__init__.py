"""The cluster side: keep one Node true to a discovery pass. Uses discovery, never the CLI.

docs/architecture.md lists the modules and the one direction imports may point.
"""
