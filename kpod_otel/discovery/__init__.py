"""Pod discovery: which pods run on this node (Kubernetes API watch, kubelet polling, local cgroups)."""
