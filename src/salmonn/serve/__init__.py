"""Serving SALMONN: an OpenAI-compatible HTTP API with dynamic batching (app.py, batcher.py), request
validation (schemas.py), the model adapter (engine.py), the web demo (static/index.html) and the
`salmonn serve` / `salmonn demo` commands (commands.py). Needs the `serve` extra (fastapi, uvicorn)."""
