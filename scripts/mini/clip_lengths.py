"""The Asterisk prompts' clip-by-clip WER by clip length, from stored outputs of long_form.py (their clip answers).

    .venv/bin/python scripts/mini/clip_lengths.py scripts/mini/results/history/long_form_all_v8b.json \
        scripts/mini/results/long_form_all.json --out scripts/mini/results/history/candidate_v9/clip_lengths.json

Outputs written before long_form.py stored `clip_level_by_length` hold the answers it is computed from; this gives
every such output the same table (long_form.py's LENGTH_BANDS, and 0-1.5 / 1.5-8 / 8+ s), keyed by file, with the
weights' sha256 each output names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from salmonn.data.asterisk import asterisk_records

sys.path.insert(0, str(Path(__file__).parent))
from long_form import LENGTH_BANDS, clip_level_by_length  # noqa: E402

COARSE_BANDS = ((0, 1.5), (1.5, 8), (8, 600))  # one-to-three words / what training held / longer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outputs", nargs="+", type=Path, help="long_form.py outputs of all 542 prompts")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    records, _ = asterisk_records()
    table = {}
    for path in args.outputs:
        stored = json.loads(path.read_text())
        answers = stored.get("clip_answers")
        if not answers or len(answers) != len(records):
            raise SystemExit(f"{path}: no clip answers for all {len(records)} prompts; give a full long_form.py output")
        texts = [a["text"] for a in answers]
        table[str(path)] = {"weights_sha256": stored.get("weights_sha256"), "clip_level_wer": stored["clip_level_wer"],
                            "bands": clip_level_by_length(records, texts),
                            "coarse": clip_level_by_length(records, texts, COARSE_BANDS)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bands_s": LENGTH_BANDS, "outputs": table}, indent=1) + "\n")
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
