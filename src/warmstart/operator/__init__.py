"""``warmstart operator``: a kopf operator that keeps images and models cached on Kubernetes
nodes and gives annotated workloads their model read-only at ``/opt/ml/model``.

Pure modules (no I/O): :mod:`spec` (the ImageCache spec and its validation), :mod:`nodes`
(which nodes, and where their agents are), :mod:`plan` (which images and models to pre-warm
where), :mod:`cache_status` (an ImageCache's status from the agents' ``/status``), :mod:`labels`
(node labels and the workloads' scheduling hint), :mod:`workloads` (annotated Deployments and
InferenceServices), :mod:`model_mount` (the model's hostPath volume and mounts),
:mod:`pod_patch` (the one merge patch of a workload's pod spec), :mod:`retry` (per-node
backoff), :mod:`pull_secrets`, :mod:`cluster_cache` (what kopf's indexes keep of the cluster,
and the operator's reads of them). I/O: :mod:`executor` (the agents), :mod:`reconciler` (the
cluster cache, the Kubernetes API for writes, and the executor), :mod:`indexes` and
:mod:`handlers` (kopf).
"""
