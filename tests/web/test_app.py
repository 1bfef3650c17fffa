"""The web API in process (FastAPI's TestClient) over a tone-word index built with the fake models."""

import io
import math
import shutil
import subprocess
import threading

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the web extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

import archive_search.api as api  # noqa: E402
from archive_search.api import Archive, file_id  # noqa: E402
from archive_search.audio import MAX_PLAY_S, PLAY_CONTEXT_S, SAMPLE_RATE, load_audio  # noqa: E402
from archive_search.errors import IndexNotFoundError  # noqa: E402
from archive_search.web.app import MAX_TOP, MAX_UPLOAD_BYTES, MAX_UPLOAD_S, create_app  # noqa: E402
from tests.fakes import (  # noqa: E402
    FakeTranscriber,
    episode,
    fake_bundle,
    lexicon,
    tone_word,
    write_episodes,
    write_wav,
)

JSON_KEYS = ["query", "file", "start", "end", "score", "text"]
"""What `archive-search --json` prints for a hit; the API gives these and more."""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    truth = write_episodes(root / "audio", count=4)
    bundle = fake_bundle(lexicon(), transcriber=FakeTranscriber())
    assert Archive.open(root / "index", bundle).add([root / "audio"]).ok
    return root, truth, bundle


@pytest.fixture(scope="module")
def loaded():
    return []


@pytest.fixture(scope="module")
def client(built, loaded):
    root, _, bundle = built

    def models(scoring):
        loaded.append(scoring)
        return bundle

    return TestClient(create_app(root / "index", models=models))


def places(truth, word):
    return [(path, start) for path, times in truth.items() for w, start, _ in times if w == word]


def is_at(hit, truth, word):
    return any(hit["file"] == path and abs(hit["start"] - start) <= 0.5 for path, start in places(truth, word))


def clip_bytes(samples, format="WAV", subtype="PCM_16"):
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format=format, subtype=subtype)
    return buffer.getvalue()


def assert_error(response, status, *words):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "Traceback" not in detail
    for word in words:
        assert word in detail.lower(), detail


# -- GET /api/search -------------------------------------------------------------------
def test_text_search_finds_the_word_with_ids_words_and_a_playable_url(client, built):
    _, truth, _ = built
    response = client.get("/api/search", params={"q": "garden", "top": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "text" and body["query"] == "garden" and body["scoring"] == "parallelkws"
    hits = body["hits"]
    assert 1 <= len(hits) <= 3 and is_at(hits[0], truth, "garden")
    top = hits[0]
    assert list(top)[: len(JSON_KEYS)] == JSON_KEYS and 0.0 <= top["score"] <= 1.0
    assert "garden" in top["text"].split()  # the transcript words around the hit
    assert top["file_id"] == file_id(top["file"]) and len(top["file_id"]) == 16
    assert top["name"] == top["file"].rsplit("/", 1)[-1]
    assert top["clip_start"] == pytest.approx(max(0.0, top["start"] - PLAY_CONTEXT_S), abs=1e-3)
    assert top["audio_url"].startswith(f"/api/audio/{top['file_id']}?")


def test_file_ids_are_stable_across_requests_and_reindexing(client, built):
    root, _, bundle = built
    first = client.get("/api/search", params={"q": "river", "top": 1}).json()["hits"][0]
    Archive.open(root / "index", bundle).add([root / "audio"])  # nothing changed: same rows
    again = client.get("/api/search", params={"q": "river", "top": 1}).json()["hits"][0]
    assert again["file_id"] == first["file_id"] == file_id(first["file"])


def test_threshold_and_top_bound_the_hits(client):
    everything = client.get("/api/search", params={"q": "apple", "top": MAX_TOP}).json()["hits"]
    assert len(everything) >= 2
    cut = everything[0]["score"] - 1e-3  # scores are rounded to 4 places
    strict = client.get("/api/search", params={"q": "apple", "top": MAX_TOP, "threshold": cut}).json()["hits"]
    assert 1 <= len(strict) < len(everything) and all(h["score"] >= cut for h in strict)
    assert len(client.get("/api/search", params={"q": "apple", "top": 1}).json()["hits"]) == 1


def test_each_text_scoring_loads_its_models_once(client, loaded):
    for _ in range(2):
        for scoring in ("tts", "parallelkws-whisper", "parallelkws"):
            response = client.get("/api/search", params={"q": "coffee", "scoring": scoring, "top": 1})
            assert response.status_code == 200 and response.json()["scoring"] == scoring
    assert sorted(loaded) == ["parallelkws", "parallelkws-whisper", "tts"]


@pytest.mark.parametrize(
    "params,status,words",
    [
        ({"q": ""}, 400, ["empty"]),
        ({"q": "   "}, 400, ["empty"]),
        ({}, 400, ["empty"]),
        ({"q": "?!"}, 400, ["query"]),
        ({"q": "apple", "top": 0}, 422, ["top"]),
        ({"q": "apple", "top": -3}, 422, ["top"]),
        ({"q": "apple", "top": MAX_TOP + 1}, 422, ["top"]),
        ({"q": "apple", "top": "many"}, 422, ["top"]),
        ({"q": "apple", "threshold": 1.5}, 422, ["threshold"]),
        ({"q": "apple", "scoring": "loudest"}, 422, ["scoring"]),
        ({"q": "apple " * 60}, 422, ["q"]),
    ],
)
def test_bad_text_queries_get_a_4xx_with_a_reason(client, params, status, words):
    assert_error(client.get("/api/search", params=params), status, *words)


# -- POST /api/search/audio ------------------------------------------------------------
def to_format(tmp_path, samples, suffix):
    """The clip encoded as `suffix` (ffmpeg for mp3 and webm/opus, as a browser records)."""
    wav = tmp_path / "clip.wav"
    write_wav(wav, samples)
    if suffix == ".wav":
        return wav.read_bytes()
    if suffix in (".flac", ".ogg"):
        return clip_bytes(samples, format=suffix[1:].upper(), subtype="PCM_16" if suffix == ".flac" else "VORBIS")
    target = tmp_path / f"clip{suffix}"
    codec = ["-c:a", "libopus"] if suffix == ".webm" else []
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), *codec, str(target)], check=True)
    return target.read_bytes()


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3", ".webm"])
def test_a_clip_in_each_format_finds_its_word(client, built, tmp_path, suffix):
    if suffix in (".mp3", ".webm") and shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    _, truth, _ = built
    quiet = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
    data = to_format(tmp_path, np.concatenate([quiet, tone_word("window"), quiet]), suffix)
    response = client.post("/api/search/audio", params={"top": 2}, files={"file": (f"window{suffix}", data)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "audio" and body["query"] == f"window{suffix}"
    assert is_at(body["hits"][0], truth, "window")


def test_a_browser_recording_is_named_by_its_media_type(client, built, tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    _, truth, _ = built
    data = to_format(tmp_path, tone_word("silver"), ".webm")
    response = client.post("/api/search/audio", files={"file": ("blob", data, "audio/webm;codecs=opus")})
    assert response.status_code == 200, response.text
    assert is_at(response.json()["hits"][0], truth, "silver")


def test_bad_clips_get_a_4xx_with_a_reason(client):
    assert_error(client.post("/api/search/audio", files={"file": ("notes.wav", b"shopping list")}), 400, "not audio")
    assert_error(client.post("/api/search/audio", files={"file": ("notes.txt", b"hello", "text/plain")}), 415, "format")
    silent = clip_bytes(np.zeros(SAMPLE_RATE, np.float32))
    assert_error(client.post("/api/search/audio", files={"file": ("quiet.wav", silent)}), 400, "silent")
    click = clip_bytes(tone_word("apple", 0.05))
    assert_error(client.post("/api/search/audio", files={"file": ("click.wav", click)}), 400, "short")
    speech = np.tile(tone_word("apple", 1.0), 7)  # 7 s of sound: longer than a query clip
    assert_error(client.post("/api/search/audio", files={"file": ("long.wav", clip_bytes(speech))}), 400, "at most")
    assert_error(client.post("/api/search/audio"), 422, "file")
    apple = {"file": ("a.wav", clip_bytes(tone_word("apple")))}
    assert_error(client.post("/api/search/audio", params={"top": 0}, files=apple), 422, "top")


def test_a_clip_longer_than_the_upload_limit_is_refused_without_decoding_it_all(client):
    long = np.tile(tone_word("apple", 1.0), int(MAX_UPLOAD_S) + 5)
    data = clip_bytes(long, format="FLAC")
    assert len(data) < MAX_UPLOAD_BYTES
    assert_error(client.post("/api/search/audio", files={"file": ("long.flac", data)}), 413, f"{MAX_UPLOAD_S:.0f} s")


def test_an_upload_over_the_size_limit_is_refused_declared_or_not(client):
    big = b"\0" * (MAX_UPLOAD_BYTES + 1)
    assert_error(client.post("/api/search/audio", files={"file": ("big.wav", big)}), 413, "mb")

    def chunks():  # no Content-Length: the body is cut where it passes the limit
        for _ in range(MAX_UPLOAD_BYTES // 2**20 + 2):
            yield b"\0" * 2**20

    multipart = {"content-type": "multipart/form-data; boundary=x"}
    assert_error(client.post("/api/search/audio", content=chunks(), headers=multipart), 413, "mb")


# -- GET /api/audio/{file_id} ----------------------------------------------------------
def test_a_hits_audio_is_the_file_around_the_hit(client, built):
    _, truth, _ = built
    hit = client.get("/api/search", params={"q": "market", "top": 1}).json()["hits"][0]
    response = client.get(hit["audio_url"])
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    assert float(response.headers["x-clip-start"]) == pytest.approx(hit["clip_start"], abs=1e-3)
    samples, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == SAMPLE_RATE
    whole = load_audio(hit["file"])
    first = int(round(hit["clip_start"] * SAMPLE_RATE))
    expected_length = min(len(whole), int(math.ceil((hit["end"] + PLAY_CONTEXT_S) * SAMPLE_RATE))) - first
    assert abs(len(samples) - expected_length) <= 2
    n = len(samples) - 2
    # the same samples as the whole file's, give or take a sample of time rounding and 16-bit rounding
    assert min(np.max(np.abs(samples[1 : n + 1] - whole[first + k : first + k + n])) for k in (0, 1, 2)) < 1e-3


def test_a_hit_of_no_length_is_heard_with_its_context(client, built):
    _, truth, _ = built
    response = client.get(f"/api/audio/{file_id(next(iter(truth)))}", params={"start": 2.0, "end": 2.0})
    assert response.status_code == 200 and float(response.headers["x-clip-start"]) == 1.0
    assert len(sf.read(io.BytesIO(response.content))[0]) == pytest.approx(2 * PLAY_CONTEXT_S * SAMPLE_RATE, abs=2)


def test_audio_at_the_start_of_a_file_is_cut_to_the_file(client, built):
    _, truth, _ = built
    path = next(iter(truth))
    response = client.get(f"/api/audio/{file_id(path)}", params={"start": 0.1, "end": 0.5})
    assert response.status_code == 200 and float(response.headers["x-clip-start"]) == 0.0
    assert len(sf.read(io.BytesIO(response.content))[0]) == pytest.approx((0.5 + PLAY_CONTEXT_S) * SAMPLE_RATE, abs=2)


@pytest.mark.parametrize(
    "path",
    [
        "/api/audio/0123456789abcdef?start=1&end=2",  # well formed, names no file
        "/api/audio/..%2F..%2F..%2Fetc%2Fpasswd?start=0&end=1",
        "/api/audio/%2Fetc%2Fpasswd?start=0&end=1",
        "/api/audio/..?start=0&end=1",
        "/api/audio/episode0.wav?start=0&end=1",
        f"/api/audio/{file_id('/etc/passwd')}?start=0&end=1",  # the id a path outside the index would have
    ],
)
def test_unknown_or_forged_file_ids_are_404_and_read_nothing(client, built, monkeypatch, path):
    read = []
    monkeypatch.setattr(api, "load_segment", lambda *args, **kwargs: read.append(args) or np.zeros(1, np.float32))
    response = client.get(path)
    assert_error(response, 404)
    assert read == []


def test_audio_reads_only_indexed_files(client, built, monkeypatch):
    _, truth, _ = built
    real = api.load_segment
    read = []
    monkeypatch.setattr(api, "load_segment", lambda path, *a, **k: read.append(str(path)) or real(path, *a, **k))
    for path in truth:
        assert client.get(f"/api/audio/{file_id(path)}", params={"start": 0.5, "end": 1.0}).status_code == 200
    assert sorted(read) == sorted(truth)


def test_an_indexed_file_gone_from_disk_is_410(tmp_path, built):
    _, _, bundle = built
    write_episodes(tmp_path / "audio", count=2)
    assert Archive.open(tmp_path / "index", bundle).add([tmp_path / "audio"]).ok
    client = TestClient(create_app(tmp_path / "index", models=lambda scoring: bundle))
    gone = tmp_path / "audio" / "episode0.wav"
    gone.unlink()
    response = client.get(f"/api/audio/{file_id(str(gone))}", params={"start": 0.5, "end": 1.0})
    assert_error(response, 410, "archive-index")


@pytest.mark.parametrize(
    "params,status,words",
    [
        ({"start": 2.0, "end": 1.0}, 400, ["start"]),
        ({"start": -1.0, "end": 1.0}, 422, ["start"]),
        ({"start": 0.0, "end": MAX_PLAY_S + 1}, 400, ["at most"]),
        ({"start": 999.0, "end": 1000.0}, 400, ["past the end"]),
        ({"start": "nan", "end": 1.0}, 422, ["start"]),
        ({"start": 1.0, "end": "inf"}, 400, ["start"]),
        ({"start": "soon", "end": 1.0}, 422, ["start"]),
        ({"end": 1.0}, 422, ["start"]),
    ],
)
def test_bad_audio_spans_get_a_4xx_with_a_reason(client, built, params, status, words):
    _, truth, _ = built
    assert_error(client.get(f"/api/audio/{file_id(next(iter(truth)))}", params=params), status, *words)


# -- GET /api/stats, the page, and what the app refuses ---------------------------------
def test_stats(client, built):
    _, truth, _ = built
    stats = client.get("/api/stats").json()
    seconds = sum(len(load_audio(p)) / SAMPLE_RATE for p in truth)
    assert stats["files"] == len(truth) and stats["hours"] == pytest.approx(seconds / 3600, abs=1e-4)
    assert stats["windows"] == stats["vectors"] > 0 and stats["model"] == "fake-v1" and stats["words"] > 0
    assert stats["limits"]["max_upload_bytes"] == MAX_UPLOAD_BYTES and "tts" in stats["scorings"]


def test_the_page_and_its_assets_are_served_by_the_app(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    for asset, kind in [("/static/app.js", "javascript"), ("/static/app.css", "text/css")]:
        response = client.get(asset)
        assert response.status_code == 200 and kind in response.headers["content-type"], asset
        assert asset in page.text and "https://" not in response.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_openapi_describes_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/search/audio", "/api/audio/{file_id}", "/api/stats"} <= set(paths)
    assert client.get("/docs").status_code == 404  # its page would load scripts from a CDN


@pytest.mark.parametrize(
    "method,path",
    [("post", "/api/search"), ("delete", "/api/audio/0123456789abcdef"), ("put", "/api/stats"),
     ("get", "/api/search/audio"), ("get", "/static/../api.py"), ("get", "/nowhere")],
)  # fmt: skip
def test_the_api_is_read_only_and_unknown_paths_are_json_errors(client, method, path):
    response = getattr(client, method)(path)
    assert response.status_code in (404, 405) and "detail" in response.json()


def test_an_unexpected_failure_is_a_json_500_without_a_trace(built, monkeypatch):
    root, _, bundle = built
    app = create_app(root / "index", models=lambda scoring: bundle)
    monkeypatch.setattr(Archive, "search", lambda *args, **kwargs: 1 / 0)
    response = TestClient(app, raise_server_exceptions=False).get("/api/search", params={"q": "apple"})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error (the server log has the details)"}


def test_a_loopback_server_answers_only_to_loopback_host_names(built):
    root, _, bundle = built
    app = create_app(root / "index", models=lambda scoring: bundle, allowed_hosts=["127.0.0.1", "localhost"])
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/api/stats").status_code == 200
    assert TestClient(app, base_url="http://attacker.example").get("/api/stats").status_code == 400


def test_there_must_be_an_index(tmp_path):
    with pytest.raises(IndexNotFoundError):
        create_app(tmp_path / "nothing", models=lambda scoring: fake_bundle())


def test_searches_keep_working_while_the_index_is_written(built, tmp_path):
    root, truth, bundle = built
    index = tmp_path / "index"
    shutil.copytree(root / "index", index)
    client = TestClient(create_app(index, models=lambda scoring: bundle))
    more = tmp_path / "more"
    more.mkdir()
    for i in range(6):
        write_wav(more / f"late{i}.wav", episode(["planet", "coffee", "apple"], seed=10 + i)[0])
    writer = threading.Thread(target=lambda: Archive.open(index, bundle).add([root / "audio", more]))
    writer.start()
    statuses = []
    while writer.is_alive() or len(statuses) < 3:
        statuses.append(client.get("/api/search", params={"q": "planet", "top": 20}).status_code)
        statuses.append(client.get("/api/stats").status_code)
    writer.join()
    assert set(statuses) == {200}
    assert client.get("/api/stats").json()["files"] == len(truth) + 6  # the reader sees what was written
    hits = client.get("/api/search", params={"q": "planet", "top": 20}).json()["hits"]
    late = [h for h in hits if "/more/late" in h["file"]]
    assert late and client.get(late[0]["audio_url"]).status_code == 200
