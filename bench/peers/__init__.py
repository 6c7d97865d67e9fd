"""Peer systems run side by side with ralm-es, each from its PyPI packages in its own virtual environment."""
