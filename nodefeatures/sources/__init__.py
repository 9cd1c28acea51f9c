"""Built-in label sources, one module (or package) per source."""
