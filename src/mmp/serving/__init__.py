"""Serving a trained mmp model: the scoring protocol, the Flask app, and the gunicorn server."""
