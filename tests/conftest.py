"""Its presence puts tests/ on sys.path, so tests import testpaths and kubeharness."""
