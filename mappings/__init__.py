"""Index templates and settings (JSON), loaded with importlib.resources."""
