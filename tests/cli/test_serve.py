"""archive-search serve (uvicorn stubbed out) and the search command beside it."""

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi", reason="the web extra is not installed")
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

import archive_search.api as api  # noqa: E402
import archive_search.web.app as web_app  # noqa: E402
from archive_search import Archive  # noqa: E402
from archive_search.cli import search as search_cli  # noqa: E402
from archive_search.errors import IndexNotFoundError  # noqa: E402
from tests.fakes import fake_bundle, lexicon, write_episodes  # noqa: E402


@pytest.fixture(scope="module")
def bundle():
    return fake_bundle(lexicon())


@pytest.fixture
def index(tmp_path, monkeypatch, bundle):
    monkeypatch.setattr(api, "load_models", lambda: bundle)
    monkeypatch.setattr(web_app, "load_models", lambda text_scoring: bundle)
    write_episodes(tmp_path / "audio", count=2)
    assert Archive.open(tmp_path / "index", bundle).add([tmp_path / "audio"]).ok
    return tmp_path / "index"


@pytest.fixture
def served(monkeypatch):
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    return calls


def run(*args):
    return CliRunner().invoke(search_cli.main, [str(a) for a in args])


def test_serve_listens_on_loopback_by_default_and_answers_only_loopback_names(index, served):
    result = run("serve", "--index", index)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr and "http://127.0.0.1:8000/" in result.stderr
    (app, options), = served
    assert options == {"host": "127.0.0.1", "port": 8000, "log_level": "warning"}
    assert TestClient(app, base_url="http://localhost:8000").get("/api/stats").json()["files"] == 2
    assert TestClient(app, base_url="http://attacker.example").get("/api/stats").status_code == 400


def test_any_other_host_needs_saying_and_prints_a_warning(index, served):
    result = run("serve", "--index", index, "--host", "0.0.0.0", "--port", "9000")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: listening on 0.0.0.0") and "no login" in result.stderr
    (app, options), = served
    assert options["host"] == "0.0.0.0" and options["port"] == 9000
    assert TestClient(app, base_url="http://archive.lan").get("/api/stats").status_code == 200


def test_serve_without_an_index_is_a_one_line_error(tmp_path, served):
    result = run("serve", "--index", tmp_path / "none")
    assert result.exit_code == IndexNotFoundError.exit_code and served == []
    assert result.stderr.count("error: ") == 1 and "no archive index" in result.stderr


def test_bad_ports_are_refused(index, served):
    assert run("serve", "--index", index, "--port", "0").exit_code == 2 and served == []


def test_the_word_serve_is_searched_with_the_search_command(index, served):
    result = run("search", "serve", "--index", index, "--json", "--top", "2")
    assert result.exit_code == 0, result.output
    assert served == [] and [json.loads(line)["query"] for line in result.stdout.splitlines()] == ["serve", "serve"]


def test_help_names_both_commands(served):
    result = run("--help")
    assert result.exit_code == 0 and "serve" in result.stdout and "search*" in result.stdout
