import json
import os

import pytest
import soundfile as sf
from click.testing import CliRunner

import archive_search.api as api
from archive_search.cli import index as index_cli
from archive_search.cli import search as search_cli
from archive_search.cli.common import INDEX_ENV, PARTIAL_FAILURE_EXIT, default_index_dir
from archive_search.errors import AudioDecodeError, IndexNotFoundError, QueryError
from tests.fakes import fake_bundle, lexicon, tone_word, write_episodes, write_wav


@pytest.fixture(scope="module")
def bundle():
    return fake_bundle(lexicon())


@pytest.fixture
def fakes(monkeypatch, bundle):
    monkeypatch.setattr(api, "load_models", lambda: bundle)
    return bundle


@pytest.fixture
def indexed(tmp_path, fakes):
    truth = write_episodes(tmp_path / "audio", count=3)
    result = CliRunner().invoke(index_cli.main, [str(tmp_path / "audio"), "--index", str(tmp_path / "index"), "-q"])
    assert result.exit_code == 0, result.output + result.stderr
    return tmp_path, truth


def run_search(*args):
    return CliRunner().invoke(search_cli.main, [str(a) for a in args])


def test_json_output_has_exactly_the_documented_keys(indexed):
    root, truth = indexed
    result = run_search("market", "--index", root / "index", "--json", "--top", "3")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        hit = json.loads(line)
        assert list(hit) == ["query", "file", "start", "end", "score", "text"]
        assert hit["query"] == "market" and os.path.isabs(hit["file"]) and hit["file"] in truth
        assert isinstance(hit["start"], float) and isinstance(hit["end"], float) and hit["start"] < hit["end"]
        assert 0.0 <= hit["score"] <= 1.0


def test_table_output_and_clips(indexed):
    root, truth = indexed
    result = run_search("garden", "--index", root / "index", "--top", "2", "--clips", root / "clips")
    assert result.exit_code == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["#", "score", "start", "end", "file"] and len(rows) == 2
    assert rows[0].split()[-1] in truth
    clips = sorted((root / "clips").iterdir())
    assert len(clips) == 2
    info = sf.info(str(clips[0]))
    assert info.samplerate == 16000 and 0.5 <= info.duration <= 2.5


def test_index_dir_from_environment(indexed, monkeypatch):
    root, _ = indexed
    monkeypatch.setenv(INDEX_ENV, str(root / "index"))
    assert default_index_dir() == root / "index"
    result = run_search("apple", "--json")
    assert result.exit_code == 0 and result.stdout.count("\n") >= 1


def test_audio_query(indexed):
    root, truth = indexed
    write_wav(root / "q.wav", tone_word("window"))
    result = run_search("--audio", root / "q.wav", "--index", root / "index", "--json", "--top", "1")
    assert result.exit_code == 0, result.stderr
    hit = json.loads(result.stdout)
    assert any(hit["file"] == p and abs(hit["start"] - s) <= 0.5 for p, t in truth.items() for w, s, _ in t if w == "window")


def test_missing_index(tmp_path, fakes):
    result = run_search("apple", "--index", tmp_path / "missing")
    assert result.exit_code == IndexNotFoundError.exit_code
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and "no archive index" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("query", ["", "   ", "?!", None])
def test_empty_query(indexed, query):
    root, _ = indexed
    args = ["--index", root / "index"] + ([query] if query is not None else [])
    result = run_search(*args)
    assert result.exit_code == QueryError.exit_code
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "query" in result.stderr


def test_non_audio_query_clip(indexed):
    root, _ = indexed
    (root / "notes.wav").write_text("shopping list")
    result = run_search("--audio", root / "notes.wav", "--index", root / "index")
    assert result.exit_code == AudioDecodeError.exit_code
    assert "notes.wav" in result.stderr and result.stderr.count("\n") == 1


def test_partial_failure_exit_code_and_json_report(tmp_path, fakes):
    write_episodes(tmp_path / "audio", count=2)
    (tmp_path / "audio" / "broken.flac").write_bytes(b"fLaC broken")
    result = CliRunner().invoke(index_cli.main, [str(tmp_path / "audio"), "--index", str(tmp_path / "index"), "--json"])
    assert result.exit_code == PARTIAL_FAILURE_EXIT
    report = json.loads(result.stdout)["index"]
    assert len(report["added"]) == 2 and len(report["errors"]) == 1 and "broken.flac" in report["errors"][0]
    assert "broken.flac" in result.stderr
    # the good files were indexed and are searchable
    assert run_search("apple", "--index", tmp_path / "index", "--json").exit_code == 0


def test_check_repairs(indexed, monkeypatch):
    root, truth = indexed
    import sqlite3

    db = sqlite3.connect(root / "index" / "index.sqlite")
    db.execute("DELETE FROM windows WHERE id IN (SELECT id FROM windows LIMIT 4)")
    db.commit()
    db.close()
    result = CliRunner().invoke(index_cli.main, ["--check", "--index", str(root / "index"), "--json"])
    assert result.exit_code == 0, result.stderr
    check = json.loads(result.stdout)["check"]
    assert check["orphan_vectors"] == 4 and check["repaired"]
    again = CliRunner().invoke(index_cli.main, ["--check", "--index", str(root / "index")])
    assert again.exit_code == 0 and "consistent" in again.stdout


def test_index_without_folders_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(index_cli.main, ["--index", str(tmp_path)])
    assert result.exit_code == 2 and "folders" in result.stderr


def test_disk_full_is_one_line_and_its_own_exit_code(tmp_path, fakes, monkeypatch):
    import errno

    from archive_search.errors import IndexWriteError
    from archive_search.storage import store as store_module

    write_episodes(tmp_path / "audio", count=2)

    @store_module._writes
    def no_room(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.Store, "put_file", no_room)
    result = CliRunner().invoke(index_cli.main, [str(tmp_path / "audio"), "--index", str(tmp_path / "index"), "-q"])
    assert result.exit_code == IndexWriteError.exit_code == 12
    assert result.stderr == (f"error: {tmp_path / 'index'}: cannot write the index (No space left on device); the index as "
                             "last saved is intact and searchable, free space and run archive-index again to finish\n")


def test_tts_flag_loads_the_spoken_text_scoring(indexed, bundle, monkeypatch):
    root, truth = indexed
    asked = []
    monkeypatch.setattr(search_cli, "load_models", lambda **options: asked.append(options) or bundle)
    result = run_search("window", "--tts", "--index", root / "index", "--json", "--top", "1")
    assert result.exit_code == 0, result.stderr
    assert asked == [{"text_scoring": "tts"}] and json.loads(result.stdout)["query"] == "window"
    write_wav(root / "q.wav", tone_word("window"))
    both = run_search("--audio", root / "q.wav", "--tts", "--index", root / "index")
    assert both.exit_code == QueryError.exit_code and "--tts" in both.stderr


def test_text_scoring_option_chooses_the_reranker(indexed, bundle, monkeypatch):
    root, truth = indexed
    asked = []
    monkeypatch.setattr(search_cli, "load_models", lambda **options: asked.append(options) or bundle)
    result = run_search("window", "--text-scoring", "parallelkws-whisper", "--index", root / "index", "--json", "--top", "1")
    assert result.exit_code == 0, result.stderr
    assert asked == [{"text_scoring": "parallelkws-whisper"}] and json.loads(result.stdout)["query"] == "window"
    clash = run_search("window", "--tts", "--text-scoring", "parallelkws", "--index", root / "index")
    assert clash.exit_code == QueryError.exit_code and "contradicts --text-scoring parallelkws" in clash.stderr
    unknown = run_search("window", "--text-scoring", "spoken", "--index", root / "index")
    assert unknown.exit_code == 2 and "spoken" in unknown.stderr


def test_transcripts_show_in_the_table_and_no_transcript_skips_them(tmp_path, monkeypatch):
    from tests.fakes import FakeTranscriber

    bundle = fake_bundle(lexicon(), transcriber=FakeTranscriber())
    monkeypatch.setattr(api, "load_models", lambda: bundle)
    write_episodes(tmp_path / "audio", count=2)
    plain = CliRunner().invoke(index_cli.main, [str(tmp_path / "audio"), "--index", str(tmp_path / "plain"), "-q", "--no-transcript", "--json"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["index"]["transcribed"] == 0
    fused = CliRunner().invoke(index_cli.main, [str(tmp_path / "audio"), "--index", str(tmp_path / "fused"), "-q"])
    assert fused.exit_code == 0 and "transcript words (2 files transcribed)" in fused.stdout
    table = run_search("river", "--index", tmp_path / "fused", "--top", "1")
    assert table.exit_code == 0
    rank, context = table.stdout.strip().splitlines()[1:3]
    assert rank.lstrip().startswith("1") and "river" in context and context.strip().startswith('"')
    hit = json.loads(run_search("river", "--index", tmp_path / "fused", "--top", "1", "--json").stdout)
    assert "river" in hit["text"].split()
    assert json.loads(run_search("river", "--index", tmp_path / "plain", "--top", "1", "--json").stdout)["text"] is None
