import pytest

import archive_search
from archive_search import Archive, Hit
from tests.fakes import fake_bundle, lexicon, write_episodes


def test_index_and_search_with_the_network_blocked(tmp_path, no_network):
    truth = write_episodes(tmp_path / "audio", count=3)
    with Archive.open(tmp_path / "index", fake_bundle(lexicon())) as archive:
        report = archive.add(tmp_path / "audio")
        assert report.ok and len(report.added) == 3
        hits = archive.search("planet", top=1)
        assert isinstance(hits[0], Hit)
        expected = [(p, s) for p, t in truth.items() for w, s, _ in t if w == "planet"]
        assert any(hits[0].file == p and abs(hits[0].start - s) <= 0.5 for p, s in expected)
        assert archive.search("zyxwv unknownword", top=1) is not None  # neural G2P path, offline
        assert archive.check().ok
        stats = archive.stats()
        assert stats["files"] == 3 and stats["vectors"] == stats["windows"] > 0 and stats["model"] == "fake-v1"


def test_public_exports():
    assert archive_search.Archive is Archive and archive_search.Hit is Hit
    with pytest.raises(AttributeError):
        archive_search.nothing_here


def test_demo_rebuilds_its_own_index_after_a_model_change(tmp_path):
    from archive_search.demo import index_demo
    from tests.fakes import fake_bundle, lexicon, write_episodes

    write_episodes(tmp_path / "audio", count=2)
    _, first = index_demo(tmp_path, fake_bundle(lexicon(), name="fake-v1"))
    archive, second = index_demo(tmp_path, fake_bundle(lexicon(), name="fake-v2"))
    assert first.ok and second.ok and len(second.added) == len(first.added) == 2
    assert archive.stats()["model"] == "fake-v2"


def test_files_and_clips_follow_the_index_by_id(tmp_path):
    from archive_search.api import file_id
    from archive_search.audio import SAMPLE_RATE, load_audio
    from archive_search.errors import FileNotIndexedError
    from tests.fakes import tone_word, write_wav

    truth = write_episodes(tmp_path / "audio", count=2)
    bundle = fake_bundle(lexicon())
    archive = Archive.open(tmp_path / "index", bundle)
    archive.add(tmp_path / "audio")
    assert sorted(f.path for f in archive.files()) == sorted(truth)
    path = sorted(truth)[0]
    clip = archive.clip(file_id(path), 1.5, 2.0, context=0.5)
    assert clip.file.path == path and clip.start == 1.0 and len(clip.samples) == 1.5 * SAMPLE_RATE
    # another writer adds a file: the same Archive finds it by id without reopening
    late = tmp_path / "audio" / "late.wav"
    write_wav(late, tone_word("apple", 3.0))
    Archive.open(tmp_path / "index", bundle).add(tmp_path / "audio")
    assert archive.clip(file_id(str(late)), 0.0, 1.0).samples.shape == load_audio(late)[: 2 * SAMPLE_RATE].shape
    late.unlink()
    Archive.open(tmp_path / "index", bundle).add(tmp_path / "audio")
    with pytest.raises(FileNotIndexedError):
        archive.clip(file_id(str(late)), 0.0, 1.0)
