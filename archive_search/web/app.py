"""The web front door: one FastAPI app over one index, a JSON API (OpenAPI at /openapi.json)
and the page at / that searches it and plays every hit.

The app only reads. It serves audio only of files in the index, named by their id
(`api.file_id`), never by a path. Bad input gets a 4xx JSON error `{"detail": reason}`, never
a stack trace. Archive calls take one lock: the models and the index reader are shared, and on
a CPU concurrent queries would only split the same cores. Serving a hit's audio takes no lock.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Callable, Literal

import numpy as np
import soundfile as sf
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from archive_search.api import Archive, file_id
from archive_search.audio import PLAY_CONTEXT_S, SAMPLE_RATE, stream_audio
from archive_search.embedders.registry import TEXT_SCORINGS, ModelBundle, load_models
from archive_search.errors import (
    ArchiveSearchError,
    AudioDecodeError,
    FileNotIndexedError,
    QueryError,
)
from archive_search.search.engine import MAX_QUERY_CLIP_S, Hit

STATIC = Path(__file__).resolve().parent / "static"

MAX_UPLOAD_BYTES = 10 * 2**20
"""Bytes. A query clip of a few seconds is far under 1 MB in any format; larger bodies are
refused while they arrive, before any parsing."""

MAX_UPLOAD_S = 30.0
"""Seconds of decoded audio an upload may hold. The engine searches at most MAX_QUERY_CLIP_S
after trimming silence; a recording has silence around the word. Decoding stops past this."""

MAX_TOP = 100
"""Most hits one request may ask for: each costs reranking time."""

MAX_QUERY_CHARS = 200
"""A query is a word or short phrase; longer text is refused before it reaches the engine."""

UPLOAD_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".webm"}
"""Upload formats, by file name; the decoder is chosen by the suffix (webm goes through ffmpeg)."""

UPLOAD_TYPES = {
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav", "audio/flac": ".flac", "audio/x-flac": ".flac",
    "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/ogg": ".ogg", "audio/opus": ".opus", "audio/webm": ".webm",
    "video/webm": ".webm",
}  # fmt: skip
"""Upload formats by media type, for a browser recording whose file name says nothing."""

CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; frame-ancestors 'none'"
"""Everything the page loads comes from the app itself (no CDN, no third party)."""

Scoring = Literal[TEXT_SCORINGS]  # type: ignore[valid-type]
log = logging.getLogger(__name__)


class HitOut(BaseModel):
    """A hit as `archive-search --json` prints it, plus what the page needs to play it."""

    query: str
    file: str
    start: float
    end: float
    score: float
    text: str | None
    file_id: str
    name: str
    audio_url: str
    clip_start: float
    """Seconds into the file where the audio at `audio_url` begins (the hit less its context)."""


class SearchOut(BaseModel):
    query: str
    kind: Literal["text", "audio"]
    scoring: str | None
    seconds: float
    hits: list[HitOut]


class ErrorOut(BaseModel):
    detail: str


ERRORS = {code: {"model": ErrorOut} for code in (400, 404, 413, 415, 422)}
WAV = {200: {"content": {"audio/wav": {}}}, 410: {"model": ErrorOut}}

Text = Annotated[str, Query(max_length=MAX_QUERY_CHARS, description="A word or short phrase.")]
Top = Annotated[int, Query(ge=1, le=MAX_TOP, description="Number of hits.")]
Threshold = Annotated[float | None, Query(ge=0.0, le=1.0, description="Only hits scoring at least this.")]
TextScoring = Annotated[Scoring | None, Query(description="How text hits are reranked (--text-scoring).")]
Upload = Annotated[UploadFile, File(description="A clip of the word: wav, flac, mp3, ogg, opus or webm.")]
Seconds = Annotated[float, Query(ge=0.0, description="Seconds into the file.")]


def hit_out(hit: Hit, query: str) -> HitOut:
    identity = file_id(hit.file)
    return HitOut(
        **{**hit.to_dict(), "query": query},
        file_id=identity,
        name=Path(hit.file).name,
        audio_url=f"/api/audio/{identity}?start={hit.start}&end={hit.end}",
        clip_start=round(max(0.0, hit.start - PLAY_CONTEXT_S), 3),
    )


def search_out(query: str, kind: str, scoring: str | None, started: float, hits: list[Hit]) -> SearchOut:
    seconds = round(time.perf_counter() - started, 3)
    return SearchOut(query=query, kind=kind, scoring=scoring, seconds=seconds, hits=[hit_out(h, query) for h in hits])


def create_app(
    index: str | Path,
    models: Callable[[str], ModelBundle] | None = None,
    allowed_hosts: list[str] | None = None,
    db: str | None = None,
) -> FastAPI:
    """The app over the index at `index` (its catalogue at `db`, as `Archive.open`);
    IndexNotFoundError when there is none.

    models: the bundle for a text scoring (one of TEXT_SCORINGS); default `load_models`. The
    first scoring's bundle loads now, the others on their first query, each once.
    allowed_hosts: Host header values to answer (None: any); a loopback server refuses others,
    so a web page elsewhere cannot reach it through DNS rebinding."""
    index = Path(index)
    load = models or (lambda scoring: load_models(text_scoring=scoring))
    archives: dict[str, Archive] = {}
    lock = threading.Lock()
    default = TEXT_SCORINGS[0]

    def archive(scoring: str = default) -> Archive:
        if scoring not in archives:
            archives[scoring] = Archive.open(index, load(scoring), db=db)
        return archives[scoring]

    with Archive.open(index, db=db) as probe:
        probe.stats()  # IndexNotFoundError, or a catalogue that cannot be read, before any model loads
    archive().stats()  # the default models load before the first request

    # no /docs or /redoc: those pages load their scripts from a CDN
    app = FastAPI(title="archive-search", summary=__doc__.splitlines()[0], docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=MAX_UPLOAD_BYTES)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    _error_handlers(app)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    @app.get("/api/search", response_model=SearchOut, responses=ERRORS)
    def search(q: Text = "", top: Top = 10, threshold: Threshold = None, scoring: TextScoring = None) -> SearchOut:
        """Hits for a word or phrase, best first."""
        started = time.perf_counter()
        with lock:
            hits = archive(scoring or default).search(q, top=top, threshold=threshold)
        return search_out(q, "text", scoring or default, started, hits)

    @app.post("/api/search/audio", response_model=SearchOut, responses=ERRORS)
    def search_audio(file: Upload, top: Top = 10, threshold: Threshold = None) -> SearchOut:
        """Hits for the word spoken in an uploaded clip (query by example)."""
        started = time.perf_counter()
        samples = _decode_upload(file)
        with lock:
            hits = archive().search_audio(samples, top=top, threshold=threshold)
        return search_out(file.filename or "clip", "audio", None, started, hits)

    @app.get("/api/audio/{file_id}", response_class=Response, responses={**ERRORS, **WAV})
    def audio(file_id: str, start: Seconds, end: Seconds) -> Response:
        """A hit's audio with about a second of context each side, as 16 kHz wav. Header
        X-Clip-Start: the seconds into the file where it begins."""
        # no lock: reading file rows and decoding share nothing with a search, so a listener does
        # not wait behind queries (docs/performance.md#the-web-server-under-load)
        try:
            clip = archive().clip(file_id, start, end)
        except AudioDecodeError as exc:  # indexed, then moved or changed on disk
            raise HTTPException(410, f"the indexed file can no longer be read ({exc.reason}); re-run archive-index")
        buffer = io.BytesIO()
        sf.write(buffer, clip.samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        headers = {"X-Clip-Start": f"{clip.start:.3f}", "Cache-Control": "no-cache"}
        return Response(buffer.getvalue(), media_type="audio/wav", headers=headers)

    @app.get("/api/stats")
    def stats() -> dict:
        """Files, hours, windows, words and model of the index, and the server's limits."""
        with lock:
            found = archive().stats()
            seconds = sum(f.duration for f in archive().files())
        limits = {"max_top": MAX_TOP, "max_query_chars": MAX_QUERY_CHARS, "max_upload_bytes": MAX_UPLOAD_BYTES,
                  "max_upload_s": MAX_UPLOAD_S, "max_query_clip_s": MAX_QUERY_CLIP_S}  # fmt: skip
        return {**found, "hours": round(seconds / 3600, 4), "scorings": list(TEXT_SCORINGS),
                "play_context_s": PLAY_CONTEXT_S, "limits": limits}  # fmt: skip

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _decode_upload(upload: UploadFile) -> np.ndarray:
    """An uploaded clip as 16 kHz mono samples (S,) float32; QueryError (400) when it is not
    audio, 415 for an unknown format, 413 past MAX_UPLOAD_S."""
    suffix = Path(upload.filename or "").suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        suffix = UPLOAD_TYPES.get((upload.content_type or "").split(";")[0].strip().lower(), "")
    if not suffix:
        named = upload.filename or upload.content_type
        raise HTTPException(415, f"unsupported clip format {named!r}; send one of {', '.join(sorted(UPLOAD_SUFFIXES))}")
    with tempfile.NamedTemporaryFile(suffix=suffix) as copy:
        copy.write(upload.file.read(MAX_UPLOAD_BYTES + 1))
        copy.flush()
        chunks, seconds = [], 0.0
        try:
            for chunk in stream_audio(copy.name, chunk_s=5.0):
                chunks.append(chunk.samples)
                seconds += chunk.duration_s
                if seconds > MAX_UPLOAD_S:
                    alone = f"send the word alone (at most {MAX_QUERY_CLIP_S:.0f} s of speech)"
                    raise HTTPException(413, f"the clip is longer than {MAX_UPLOAD_S:.0f} s; {alone}")
        except AudioDecodeError as exc:
            raise QueryError(f"the uploaded clip is not audio that can be decoded: {exc.reason}") from exc
    if not chunks:
        raise QueryError("the uploaded clip holds no audio")
    return np.concatenate(chunks)


def _error_handlers(app: FastAPI) -> None:
    """Every error as `{"detail": reason}` with a 4xx status for bad input; no stack traces."""
    status = {QueryError: 400, AudioDecodeError: 400, FileNotIndexedError: 404}

    @app.exception_handler(ArchiveSearchError)
    async def domain(request: Request, exc: ArchiveSearchError) -> JSONResponse:
        code = next((c for kind, c in status.items() if isinstance(exc, kind)), 503)  # the index itself is unusable
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = [f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(reasons)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (the server log has the details)"}, status_code=500)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, declared (Content-Length)
    or not. An undeclared one is cut where it passes the limit, and whatever the app answers
    to the cut body is replaced by the 413, so an upload can never fill memory or disk."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await _too_large(send, self.limit)
        received, over, answered = 0, False, False

        async def counted():
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded(message):
            nonlocal answered
            if not over:
                await send(message)
            elif not answered:
                answered = True
                await _too_large(send, self.limit)

        await self.app(scope, counted, guarded)


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"the request body is over {limit // 2**20} MB; send a short clip"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
