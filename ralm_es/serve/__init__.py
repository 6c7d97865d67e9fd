"""``ralm-es serve``: the query layer and a trained run behind a small REST API (FastAPI)."""
