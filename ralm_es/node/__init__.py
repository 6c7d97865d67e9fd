"""The local Elasticsearch node: the pinned distribution and the clusters ralm-es runs on this machine."""
