"""A hub model's identity (the per-sample cache's and the teacher shards' key) is the same
before its download and after: a first run killed after the download resumes its answers."""

from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
from huggingface_hub import constants

from ftlab.llm import fingerprint

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _not_cached(*args, **kwargs):
    raise FileNotFoundError("not in the local cache")


def test_a_hub_id_hashes_the_same_commit_before_and_after_its_download(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    asked = []
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, repo_id, **kw: asked.append(repo_id)
                        or SimpleNamespace(sha=COMMIT))  # fmt: skip
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _not_cached)
    before = fingerprint.model_fingerprint("org/model")
    assert asked == ["org/model"]
    # downloaded: the cache's snapshots/<commit> folder answers, the hub is not asked
    snap = tmp_path / "models--org--model" / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(snap))
    after = fingerprint.model_fingerprint("org/model")
    assert after == before and asked == ["org/model"]
    # another commit is another model
    other = tmp_path / "models--org--model" / "snapshots" / ("f" * 40)
    other.mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(other))
    assert fingerprint.model_fingerprint("org/model") != before


def test_offline_and_not_cached_hashes_the_id_without_asking_the_hub(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _not_cached)

    def no_network(self, *a, **k):
        raise AssertionError("the hub was asked while offline")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_network)
    a = fingerprint.model_fingerprint("org/model")
    assert (
        a
        == fingerprint.model_fingerprint("org/model")
        != fingerprint.model_fingerprint("org/other")
    )


def test_a_local_folder_is_its_content(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert fingerprint.model_fingerprint(str(tmp_path)) == fingerprint.checkpoint_sha256(
        Path(tmp_path)
    )
