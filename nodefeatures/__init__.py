"""Node feature discovery labeler for Kubernetes."""

__version__ = "0.1.0"
