"""The web demo: one static page (no build step, no dependency) and the example clips it offers, served by name
from a list fixed at start."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from .schemas import APIError

STATIC = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
               ".opus": "audio/ogg", ".m4a": "audio/mp4"}


def default_examples_dir() -> Path | None:
    """The project's ../shared/audio when this runs from a checkout, else clips bundled in the package."""
    for candidate in (Path(__file__).resolve().parents[4] / "shared" / "audio", STATIC.parent / "examples"):
        if candidate.is_dir():
            return candidate
    return None


def find_examples(directory: str | Path | None) -> dict[str, Path]:
    """name -> file, fixed at start: the demo asks for clips by name and only these names are served."""
    folder = Path(directory) if directory else default_examples_dir()
    if folder is None or not folder.is_dir():
        return {}
    return {p.name: p.resolve() for p in sorted(folder.iterdir()) if p.suffix.lower() in MEDIA_TYPES and p.is_file()}


def demo_router(engine, settings) -> APIRouter:
    router = APIRouter()
    examples = find_examples(settings.examples_dir)
    index_html = (STATIC / "index.html").read_text(encoding="utf-8")
    defaults = engine.defaults

    @router.get("/")
    @router.get("/demo")
    async def demo_page():
        return HTMLResponse(index_html)

    @router.get("/demo/info")
    async def demo_info():
        return {"model": engine.name, "auth_required": bool(settings.api_key), "examples": list(examples),
                "max_audio_seconds": engine.max_audio_seconds, "max_tokens_limit": settings.max_tokens_limit,
                "defaults": {"max_tokens": min(defaults.max_new_tokens, settings.max_tokens_limit),
                             "num_beams": defaults.num_beams,
                             "temperature": defaults.temperature if defaults.do_sample else 0.0,
                             "top_p": defaults.top_p, "lora_scale": engine.default_lora_scale}}

    @router.get("/demo/examples/{name}")
    async def demo_example(name: str):
        path = examples.get(name)  # looked up in the allow-list only: never joined onto a directory
        if path is None:
            raise APIError(404, f"no example clip named {name!r}", "name", "not_found")
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"))

    return router
