"""Passage stores: the Backend protocol and its Elasticsearch and local implementations."""
