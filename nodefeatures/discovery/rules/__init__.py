"""Rules: NFD's `nfd.k8s-sigs.io/v1alpha1` Rule language, evaluated over raw features.

`model` holds parsed rules and their validation, `expressions` the operators, `engine`
the evaluation of rules in order over a `features.FeatureSet`, `gotemplate` and
`gofuncs` the Go templates of `labelsTemplate` / `varsTemplate`. Nothing here talks to the
cluster or the command line; sources and commands build on it.
"""
