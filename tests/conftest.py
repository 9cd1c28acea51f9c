"""Its presence puts tests/ on sys.path, so tests import helper modules by name
(testpaths, kubeharness, kustomize_lite, agentkit's neighbours)."""
