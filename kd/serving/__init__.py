"""Serving: exports, the runtime that loads them, the HTTP API, the MLflow model."""
