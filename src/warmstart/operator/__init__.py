"""``warmstart operator``: a kopf operator that keeps images cached on Kubernetes nodes.

Pure modules (no I/O): :mod:`spec` (the ImageCache spec and its validation), :mod:`nodes`
(which nodes, and where their agents are), :mod:`plan` (which images to pre-warm where),
:mod:`cache_status` (an ImageCache's status from the agents' ``/status``), :mod:`labels` (node
labels and the Deployments' scheduling hint), :mod:`workloads` (annotated Deployments and
InferenceServices), :mod:`retry` (per-node backoff), :mod:`pull_secrets`. I/O: :mod:`executor`
(the agents), :mod:`reconciler` (the Kubernetes API and the executor), :mod:`handlers` (kopf).
"""
