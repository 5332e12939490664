"""Example apps (run them from the repository root: ``uvicorn examples.fastapi_app:app``)."""
