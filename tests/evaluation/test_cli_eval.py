"""archive-eval end to end through click, with tone models injected by --bundle."""

import json

import numpy as np
import soundfile as sf
from click.testing import CliRunner

from archive_search.cli.eval import main
from archive_search.data.manifest import write_manifest
from archive_search.embedders.registry import ModelBundle

from .tones import WORDS, ToneAudioEmbedder, ToneReranker, ToneTextEmbedder, tone, write_corpus

BUNDLE = "tests.evaluation.test_cli_eval:tone_bundle"


def tone_bundle() -> ModelBundle:
    return ModelBundle("tone-v1", ToneAudioEmbedder(), ToneTextEmbedder(), ToneReranker())


def test_clips_command_writes_report_and_det(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "clips"
    folder.mkdir()
    for word in WORDS[:3]:
        for take in range(3):
            sf.write(folder / f"{word}_a_{take}.wav", tone(word, 0.5, rng), 16000)
    result = CliRunner().invoke(main, ["clips", str(folder), "--out", str(tmp_path / "out"), "--bundle", BUNDLE, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["parallelkws (rerank)"]["pooled"]["eer"] == 0.0
    assert data["jmcl (cosine)"]["pooled"]["n_positive"] == 9
    engine = [name for name in data if name.startswith("engine (")]
    assert len(engine) == 1 and data[engine[0]]["pooled"]["n_positive"] == 9
    assert (tmp_path / "out" / "det.png").read_bytes()[:4] == b"\x89PNG"
    assert "pooled EER" in (tmp_path / "out" / "report.md").read_text()


def test_words_and_windowed_commands(tmp_path):
    rng = np.random.default_rng(1)
    scripts = [list(rng.choice(WORDS, 3, replace=False)) for _ in range(6)]
    write_manifest(tmp_path / "m.jsonl", write_corpus(tmp_path, scripts))
    (tmp_path / "vocab.txt").write_text("\n".join(WORDS[:3]) + "\n")
    common = ["--manifest", str(tmp_path / "m.jsonl"), "--vocab", str(tmp_path / "vocab.txt"), "--bundle", BUNDLE, "--json"]
    words = CliRunner().invoke(main, ["words", *common])
    assert words.exit_code == 0, words.output
    data = json.loads(words.output)
    assert data["acoustic"]["all"]["ap"] == 1.0 and data["cross"]["oov"]["ap"] == 1.0
    windowed = CliRunner().invoke(main, ["windowed", *common, "--windows", "0.4"])
    assert windowed.exit_code == 0, windowed.output
    rows = json.loads(windowed.output)["results"]
    assert {(r["task"], r["scoring"]) for r in rows} == {(task, scoring) for task in ("kws", "std") for scoring in ("jmcl", "rerank", "engine")}
    assert all(r["eer"] == 0.0 for r in rows)


def test_search_command_on_tone_archive(tmp_path):
    rng = np.random.default_rng(2)
    scripts = [list(rng.choice(WORDS, 4, replace=False)) for _ in range(4)]
    write_manifest(tmp_path / "m.jsonl", write_corpus(tmp_path / "audio", scripts))
    (tmp_path / "m.jsonl").rename(tmp_path / "audio" / "m.jsonl")
    out = tmp_path / "out"
    args = ["search", "--manifest", str(tmp_path / "audio" / "m.jsonl"), "--out", str(out), "--bundle", BUNDLE,
            "--peers", "jmcl-only,dtw", "--words", "4", "--phrases", "0", "--absent", "2", "--spoken", "2", "--top", "10", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    names = [s["name"] for s in data["systems"]]
    assert names[:2] == ["engine", "jmcl-only"]
    text_row = next(s for s in data["summaries"] if s["system"] == "engine" and s["group"] == "text")
    assert text_row["mtwv"] > 0.5
    assert (out / "report.md").exists() and (out / "queries.jsonl").exists() and (out / "index").is_dir()


def test_missing_manifest_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(main, ["words", "--manifest", str(tmp_path / "nope.jsonl"), "--bundle", BUNDLE])
    assert result.exit_code != 0
    assert "manifest not found" in result.output
