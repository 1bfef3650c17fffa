"""End to end with the catalogue in PostgreSQL: archive-index --db URL, archive-search, an
incremental re-run and --check, against a real server (tests/pg_server.py) and the fake models."""

import json
import os
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

import archive_search.api as api
from archive_search.cli import index as index_cli
from archive_search.cli import search as search_cli
from archive_search.cli.common import DB_ENV
from archive_search.errors import IndexMismatchError
from archive_search.storage.store import LINK_NAME
from tests.fakes import FakeTranscriber, episode, fake_bundle, lexicon, write_episodes, write_wav
from tests.pg_server import postgres_server, postgres_url  # noqa: F401  (fixtures)


@pytest.fixture
def fakes(monkeypatch):
    bundle = fake_bundle(lexicon(), transcriber=FakeTranscriber())
    monkeypatch.setattr(api, "load_models", lambda: bundle)
    return bundle


def index(*args):
    result = CliRunner().invoke(index_cli.main, [str(a) for a in args] + ["-q", "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def hits(*args):
    result = CliRunner().invoke(search_cli.main, [str(a) for a in args] + ["--json"])
    assert result.exit_code == 0, result.stderr
    return [(h["file"], round(h["start"], 2), h["text"]) for h in map(json.loads, result.stdout.splitlines())]


def test_postgres_catalogue_end_to_end(tmp_path, fakes, postgres_url, monkeypatch):
    audio, folder = tmp_path / "audio", tmp_path / "index"
    truth = write_episodes(audio, count=3)
    first = index(audio, "--index", folder, "--db", postgres_url)["index"]
    assert len(first["added"]) == 3 and first["transcribed"] == 3 and first["ok"]
    assert (folder / "vectors.faiss").is_file() and (folder / LINK_NAME).is_file()
    assert not (folder / "index.sqlite").exists()  # the catalogue is in PostgreSQL, not in the folder

    # the same hits as the embedded SQLite catalogue gives for the same audio
    index(audio, "--index", tmp_path / "sqlite-index")
    found = hits("market", "--index", folder, "--top", "3")
    assert found == hits("market", "--index", tmp_path / "sqlite-index", "--top", "3")
    assert found[0][0] in truth and "market" in found[0][2]
    assert found == hits("market", "--index", folder, "--db", postgres_url, "--top", "3")
    monkeypatch.setenv(DB_ENV, postgres_url)  # the URL from the environment, as a search server would take it
    assert found == hits("market", "--index", folder, "--top", "3")
    monkeypatch.delenv(DB_ENV)

    # incremental: unchanged files skipped, a changed one redone, a vanished one removed
    assert index(audio, "--index", folder)["index"]["unchanged"] == 3
    changed, gone = sorted(truth)[:2]
    write_wav(changed, episode(["coffee", "planet"], seed=9)[0])
    os.utime(changed, (time.time() + 5, time.time() + 5))
    os.remove(gone)
    rerun = index(audio, "--index", folder)["index"]
    assert (rerun["updated"], rerun["removed"], rerun["unchanged"]) == ([changed], [gone], 1)
    assert all(hit[0] != gone for hit in hits("market", "--index", folder, "--top", "10"))

    check = index("--check", "--index", folder)["check"]
    assert check["ok"] and (check["files"], check["untranscribed"]) == (2, 0)
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM files")).scalar() == 2
        assert connection.execute(text("SELECT count(*) FROM windows")).scalar() == check["windows"] == check["vectors"]
    engine.dispose()


def test_postgres_url_refused_for_a_folder_with_its_own_sqlite_catalogue(tmp_path, fakes, postgres_url):
    write_episodes(tmp_path / "audio", count=1)
    index(tmp_path / "audio", "--index", tmp_path / "index")
    result = CliRunner().invoke(index_cli.main, [str(tmp_path / "audio"), "--index", str(tmp_path / "index"),
                                                 "--db", postgres_url, "-q"])  # fmt: skip
    assert result.exit_code == IndexMismatchError.exit_code and "keeps its catalogue in" in result.stderr
