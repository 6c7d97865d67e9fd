"""ralm-es: retrieval-augmented language models on Elasticsearch."""

from ralm_es.version import __version__

__all__ = ["__version__"]
