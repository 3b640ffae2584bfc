"""Pod discovery: which pods run on this node (Kubernetes API watch, kubelet polling, local cgroups).

- `parse`: pure Pod/PodList JSON -> `PodInfo` parsers (typed `PodParseError` per malformed pod).
- `informer.InformerProvider`: LIST + WATCH of `spec.nodeName=<node>` (bookmarks, resume, 410 re-LIST,
  periodic resync, jittered backoff) in a daemon thread.
- `kubelet.KubeletProvider`: polls the kubelet's `/pods` over verified TLS with the service-account token.
- `auto.AutoProvider`: informer, kubelet fallback after `api-fallback-after` s, injected local provider last;
  exports the `kpod.agent.discovery.mode` gauge and `...mode.switches` counter.
- `factory.build_provider(config, stats, local_factory)`: the provider for `discovery.mode`.
- `index.PodIndex(provider, config.filter)`: the agent calls `cycle()` once per collection cycle; it applies
  the namespace filters and keeps finished/deleted pods for exactly one final cycle.

Nothing is re-exported here so that importing `discovery.base` (e.g. from the local provider) does not
pull in the `kubernetes` client.
"""
