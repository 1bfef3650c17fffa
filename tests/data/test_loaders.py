"""Real-corpus loaders on tiny fixtures made here: round trips through manifests and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from archive_search.cli.data import main as data_cli
from archive_search.data import loaders
from archive_search.data.manifest import AlignedUnit, read_manifest
from archive_search.errors import DataError


def _wav(path, seconds=0.5, rate=16000, suffix_ok=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    return path


def _textgrid(path, words, phones, xmax):
    """A long-format TextGrid (as MFA writes) with words and phones tiers; entries (start, end, label)."""

    def tier(name, entries):
        lines = [
            '\titem [{}]:', '\t\tclass = "IntervalTier"', f'\t\tname = "{name}"', "\t\txmin = 0.0",
            f"\t\txmax = {xmax}", f"\t\tintervals: size = {len(entries)}",
        ]  # fmt: skip
        for k, (start, end, label) in enumerate(entries, start=1):
            lines += [f"\t\t\tintervals [{k}]:", f"\t\t\t\txmin = {start}", f"\t\t\t\txmax = {end}", f'\t\t\t\ttext = "{label}"']
        return lines

    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0.0", f"xmax = {xmax}",
             "tiers? <exists>", "size = 2", "item []:"]  # fmt: skip
    body = tier("words", words) + tier("phones", phones)
    body[0] = body[0].format(1)
    second = body.index("\titem [{}]:")
    body[second] = body[second].format(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines + body) + "\n", encoding="utf-8")
    return path


def _librispeech(root):
    _wav(root / "audio/19/198/19-198-0000.flac", 1.2)
    _wav(root / "audio/19/198/19-198-0001.flac", 0.8)
    (root / "audio/19/198/19-198.trans.txt").write_text("19-198-0000 HELLO BIG WORLD\n19-198-0001 GOOD DAY\n")
    _textgrid(
        root / "alignment/19/198/19-198-0000.TextGrid",
        [(0.0, 0.1, ""), (0.1, 0.5, "hello"), (0.5, 0.7, "<unk>"), (0.7, 1.1, "world"), (1.1, 1.2, "")],
        [(0.0, 0.1, "sil"), (0.1, 0.2, "HH"), (0.2, 0.3, "AH0"), (0.3, 0.4, "L"), (0.4, 0.5, "OW1"),
         (0.5, 0.7, "spn"), (0.7, 0.8, "W"), (0.8, 0.95, "ER1"), (0.95, 1.0, "L"), (1.0, 1.1, "D"), (1.1, 1.2, "sp")],
        1.2,
    )  # fmt: skip


def test_librispeech_with_textgrids(tmp_path):
    _librispeech(tmp_path)
    utterances = {u.id: u for u in loaders.load_librispeech(tmp_path, split="dev")}
    first, second = utterances["19-198-0000"], utterances["19-198-0001"]
    assert first.text == "hello big world" and first.speaker == "librispeech:19" and first.split == "dev"
    assert first.duration == pytest.approx(1.2)
    assert first.words == [AlignedUnit("hello", 0.1, 0.5), AlignedUnit("world", 0.7, 1.1)]  # <unk>, silence dropped
    assert [p.label for p in first.phones] == ["HH", "AH", "L", "OW", "W", "ER", "L", "D"]
    assert first.phones[1] == AlignedUnit("AH", 0.2, 0.3)
    assert second.words == [] and second.text == "good day"  # no TextGrid: transcript only


def test_malformed_textgrid_names_the_file(tmp_path):
    _librispeech(tmp_path)
    broken = tmp_path / "alignment/19/198/19-198-0000.TextGrid"
    broken.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\nxmin = oops\n')
    with pytest.raises(DataError, match="19-198-0000.TextGrid"):
        loaders.load_librispeech(tmp_path)


def test_textgrid_without_phones_tier(tmp_path):
    path = _textgrid(tmp_path / "x.TextGrid", [(0.0, 1.0, "hi")], [(0.0, 1.0, "HH")], 1.0)
    path.write_text(path.read_text().replace('name = "phones"', 'name = "segments"'))
    with pytest.raises(DataError, match="no phones tier"):
        loaders.read_textgrid(path)


def test_label_folder_fsdd(tmp_path):
    _wav(tmp_path / "3_jackson_0.wav", 0.4, rate=8000)
    _wav(tmp_path / "7_nicolas_12.wav", 0.3, rate=8000)
    utterances = loaders.load_label_folder(tmp_path, source="fsdd")
    assert [(u.text, u.speaker) for u in utterances] == [("three", "fsdd:jackson"), ("seven", "fsdd:nicolas")]
    assert utterances[0].duration == pytest.approx(0.4)
    _wav(tmp_path / "badname.wav")
    with pytest.raises(DataError, match="badname.wav"):
        loaders.load_label_folder(tmp_path)


def test_speech_commands_splits(tmp_path):
    _wav(tmp_path / "yes/0a7c2a8d_nohash_0.wav")
    _wav(tmp_path / "yes/0b09edd3_nohash_1.wav")
    _wav(tmp_path / "left/0a7c2a8d_nohash_0.wav")
    _wav(tmp_path / "_background_noise_/white_noise.wav")
    (tmp_path / "validation_list.txt").write_text("yes/0b09edd3_nohash_1.wav\n")
    (tmp_path / "testing_list.txt").write_text("left/0a7c2a8d_nohash_0.wav\n")
    utterances = loaders.load_speech_commands(tmp_path)
    assert sorted((u.text, u.split, u.speaker) for u in utterances) == [
        ("left", "test", "gsc:0a7c2a8d"), ("yes", "dev", "gsc:0b09edd3"), ("yes", "train", "gsc:0a7c2a8d"),
    ]  # fmt: skip


def test_libriphrase_csv(tmp_path):
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "b.wav")
    _wav(tmp_path / "c.wav")
    csv_path = tmp_path / "libriphrase_diffspk_all_1word.csv"
    csv_path.write_text(
        "anchor,anchor_spk,anchor_text,anchor_dur,comparison,comparison_spk,comparison_text,comparison_dur,type,target\n"
        "a.wav,19,Morning,0.5,b.wav,26,morning,0.5,diffspk_positive,1\n"
        "a.wav,19,Morning,0.5,c.wav,32,mourning,0.5,diffspk_hardneg,0\n"
    )
    pairs = loaders.load_libriphrase_pairs(csv_path)
    assert [(p.target, p.hard, p.comparison_text) for p in pairs] == [(True, False, "morning"), (False, True, "mourning")]
    utterances = loaders.load_libriphrase(csv_path)
    assert len(utterances) == 3 and {u.text for u in utterances} == {"morning", "mourning"}
    bad = tmp_path / "bad.csv"
    bad.write_text("anchor,anchor_text,comparison\na.wav,x,b.wav\n")
    with pytest.raises(DataError, match="bad.csv.*comparison_text"):
        loaders.load_libriphrase_pairs(bad)
    bad.write_text("anchor,anchor_text,comparison,comparison_text,target\na.wav,x,b.wav,y,maybe\n")
    with pytest.raises(DataError, match="bad.csv:2"):
        loaders.load_libriphrase_pairs(bad)


def test_cli_import_round_trip(tmp_path):
    _librispeech(tmp_path / "ls")
    out = tmp_path / "ls.jsonl"
    result = CliRunner().invoke(data_cli, ["import", "librispeech", str(tmp_path / "ls"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert '"utterances": 2' in result.stdout
    assert read_manifest(out) == loaders.load_librispeech(tmp_path / "ls")
    missing = CliRunner().invoke(data_cli, ["import", "fsdd", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == DataError.exit_code and "nope" in missing.output
