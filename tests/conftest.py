"""Its presence puts tests/ on sys.path, so tests import helper modules by name
(testpaths, kubeharness, manifests, agentkit's neighbours)."""
