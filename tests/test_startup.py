"""What `salmonn infer` no longer pays for at every start (issue 31; benchmarks/startup.py measures the whole):
hashing the PyPI backbones' source files on every model load, and random initialisation of a Whisper encoder whose
every tensor is loaded next."""

from __future__ import annotations

import os

import torch

from salmonn import backbones as bb

from .conftest import FIXTURE


def _sources(tmp_path):
    sources = [tmp_path / "model.bin", tmp_path / "config.json"]
    sources[0].write_bytes(b"weights" * 1000)
    sources[1].write_text("{}")
    return sources


def test_backbone_sources_are_hashed_again_only_when_they_change(tmp_path, monkeypatch):
    sources, out, builds, hashed = _sources(tmp_path), tmp_path / "cache" / "built", [], []
    real = bb.file_sha256
    monkeypatch.setattr(bb, "file_sha256", lambda p: hashed.append(p.name) or real(p))

    def build(tmp):
        builds.append(tmp)
        (tmp / "model.safetensors").write_bytes(b"converted")

    assert bb._build_once(out, sources, build) == out and len(builds) == 1
    hashed.clear()
    assert bb._build_once(out, sources, build) == out  # checked once since the build: neither hashed nor built
    assert hashed == [] and len(builds) == 1
    stat = sources[0].stat()
    os.utime(sources[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # reinstalled: same bytes, newer file
    assert bb._build_once(out, sources, build) == out and hashed == ["model.bin", "config.json"] and len(builds) == 1
    hashed.clear()
    assert bb._build_once(out, sources, build) == out and hashed == []
    sources[0].write_bytes(b"other weights" * 1000)  # a changed source is rebuilt
    assert bb._build_once(out, sources, build) == out and len(builds) == 2
    assert bb._is_built(out, bb._fingerprint(sources))  # the marker keeps its format (older versions read it)


def test_the_whisper_encoder_is_built_without_initialising_what_is_loaded(monkeypatch):
    from salmonn.builder import load_whisper_encoder
    from salmonn.config import load_config
    calls = []
    real = torch.nn.init.kaiming_uniform_
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_",
                        lambda *a, **k: calls.append((a[0] if a else k["tensor"]).is_meta) or real(*a, **k))
    encoder, _ = load_whisper_encoder(load_config(FIXTURE / "config.yaml").model.whisper_path, torch.float32)
    assert calls and all(calls) and not any(p.is_meta for p in encoder.parameters())  # initialised: nothing
    from salmonn.checkpoint import read_prefixed
    state = read_prefixed(load_config(FIXTURE / "config.yaml").model.whisper_path, ("model.encoder.", "encoder."))
    own = encoder.state_dict()
    assert set(own) == set(state) and all(torch.equal(own[k], v.to(own[k].dtype)) for k, v in state.items())


def test_two_installs_sharing_the_cache_do_not_hash_in_turn(tmp_path, monkeypatch):
    """Two virtual environments with the same backbone package: their files differ by path only."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b, out, hashed = _sources(tmp_path / "a"), _sources(tmp_path / "b"), tmp_path / "cache" / "built", []
    real = bb.file_sha256
    monkeypatch.setattr(bb, "file_sha256", lambda p: hashed.append(p) or real(p))
    build = lambda tmp: (tmp / "model.safetensors").write_bytes(b"converted")  # noqa: E731
    for sources in (a, b):
        bb._build_once(out, sources, build)
    hashed.clear()
    for sources in (a, b, a, b):
        assert bb._build_once(out, sources, build) == out
    assert hashed == []


def test_the_console_script_runs_atexit_handlers_and_keeps_its_output_and_status(tmp_path):
    """cli.run ends a one-shot command without module teardown: atexit still runs, output is flushed, status kept."""
    import subprocess
    import sys
    script = ("import atexit, sys; atexit.register(lambda: print('atexit ran', flush=True)); "
              "sys.argv = ['salmonn', 'infer', '--audio', sys.argv[1], '--prompt', 'x']; "
              "from salmonn.cli import run; print('before', end=''); run()")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "missing.wav")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout == "beforeatexit ran\n"
    assert "missing.wav" in done.stderr and "error" in done.stderr
