"""Sample corpora shipped with ralm-es, and readers for the shared benchmark sets."""
