"""Load on the REST service: N verify (or embed) requests with C in flight; req/s and p50/p95/p99 latency.

The requests carry 112×112 aligned SynthFaces crops (no detector involved), cycling through 24 pairs.
Against a running service (``faceforge serve ...``)::

    PYTHONPATH=src python benchmarks/serve_load.py --url http://127.0.0.1:8000 [--api-key-env VAR]

Without ``--url`` it starts the service itself on 127.0.0.1 (a real uvicorn in a thread) for ``--model``
(.ckpt / .onnx) or, by default, a randomly initialised GhostFaceNetV1 (112×112, 512-d; the weights do
not change the speed), and also times the same calls in-process, serially, as the baseline: the ratio
is what HTTP, multipart, PNG and JSON add per request.

``--compare-batching`` serves the model twice in the same run, one request at a time (``max_batch=1``)
and micro-batched (``--max-batch``, default 16), at 1, 8 and 32 concurrent clients, and prints req/s,
p50/p95 and the model calls and crops per call of the batcher (``--arch quickstart``: the demo's
64×64 model, whose calls cost mostly dispatch on a CPU; the default 112×112 GhostFaceNetV1 is
compute-bound there). The load generator runs in a separate process (``loadtest.LoadProcess``), as a
real client would: in the server's process its threads would take the GIL from the server
(``--same-process-client`` measures that way anyway)::

    PYTHONPATH=src python benchmarks/serve_load.py --compare-batching [--arch quickstart] [--requests 200]

    PYTHONPATH=src python benchmarks/serve_load.py                      # 200 requests, 8 concurrent
    PYTHONPATH=src python benchmarks/serve_load.py --requests 1000 --concurrency 16 --model best.ckpt

``--attack`` measures the service under the decompression-bomb attack of ``docs/security.md`` instead: a
real uvicorn in another process (a randomly initialised GhostFaceNetV1; YuNet from ../shared when it is
there, else a detector that finds nothing) gets 16 concurrent uploads of each kind while aligned crops are
verified beside them, and its RSS is sampled every 10 ms::

    PYTHONPATH=src python benchmarks/serve_load.py --attack [--max-decode-mb 512] [--attack-n 16]

It prints, per attack: the answers' status codes, the slowest answer, how many normal requests succeeded,
and the server's RSS before, at the peak and 3 s after.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: the load generator (tests/helpers/loadtest.py) is a test and benchmark tool, not part of the package
HELPERS = Path(__file__).resolve().parents[1] / "tests" / "helpers"
sys.path.insert(0, str(HELPERS))


def synth_pngs(n_ids: int = 12) -> dict[tuple[int, int], bytes]:
    """PNG bytes of aligned SynthFaces crops of identities 1000.. (two images each, plus one more id)."""
    from PIL import Image

    from faceforge.data.synth import SynthFaces

    sf = SynthFaces(0, difficulty=0.5)
    out = {}
    for i in range(1000, 1000 + n_ids + 1):
        for j in range(2):
            buf = io.BytesIO()
            Image.fromarray(sf.image(i, j)[0]).save(buf, format="PNG")
            out[(i, j)] = buf.getvalue()
    return out


def build_requests(pngs: dict[tuple[int, int], bytes], endpoint: str) -> list[Any]:
    """One LoadRequest per genuine and impostor pair (verify) or per image (embed)."""
    from loadtest import LoadRequest

    ids = sorted({i for i, _ in pngs})[:-1]
    if endpoint == "embed":
        return [
            LoadRequest("/v1/embed", {"image": ("x.png", pngs[(i, j)], "image/png")})
            for i in ids
            for j in (0, 1)
        ]
    reqs = []
    for i in ids:
        for other in (i, i + 1):
            files = {"a": ("a.png", pngs[(i, 0)], "image/png"), "b": ("b.png", pngs[(other, 1)], "image/png")}
            reqs.append(LoadRequest("/v1/verify", files))
    return reqs


def in_process_ms(recognizer: Any, reqs: list[Any], n: int) -> float:
    """Median milliseconds of the same work called directly (serially) on the recognizer."""
    times = []
    for k in range(n):
        files = reqs[k % len(reqs)].files
        t0 = time.perf_counter()
        if "a" in files:
            recognizer.verify(files["a"][1], files["b"][1])
        else:
            recognizer.embed_faces(files["image"][1])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="base URL of a running service (default: start one here)")
    ap.add_argument("--model", help=".ckpt or .onnx to serve when --url is not given")
    ap.add_argument(
        "--arch",
        default="ghostfacenetv1",
        help="without --model, a randomly initialised model: a registered backbone at its default size "
        "(default ghostfacenetv1, 112x112) or 'quickstart' (the 64x64 GhostFaceNetV1 of make demo)",
    )
    ap.add_argument("--endpoint", choices=["verify", "embed"], default="verify")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--api-key-env", metavar="VAR", help="send the value of this variable as X-API-Key")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the in-process service")
    ap.add_argument(
        "--compare-batching",
        action="store_true",
        help="micro-batched (--max-batch) vs one request at a time, at 1, 8 and 32 concurrent clients",
    )
    ap.add_argument(
        "--max-batch", type=int, default=16, help="the batched service's --max-batch (default 16)"
    )
    ap.add_argument(
        "--batch-workers",
        type=int,
        default=1,
        help="with --compare-batching and N > 1: also a batched service running N batches at once",
    )
    ap.add_argument(
        "--batch-process",
        choices=["auto", "on", "off", "both"],
        default="auto",
        help="the batched service's model processes (create_app's batch_process; auto: on for a PyTorch "
        "model on 2+ CPU cores); both: one batched service with and one without, in the same run",
    )
    ap.add_argument(
        "--same-process-client",
        action="store_true",
        help="run the load generator's threads in the server's process (default: a separate process, "
        "as a real client is; in one process they share the server's GIL)",
    )
    ap.add_argument("--attack", action="store_true", help="measure the decompression-bomb attack instead")
    ap.add_argument("--attack-n", type=int, default=16, help="concurrent attack uploads (default 16)")
    ap.add_argument("--max-decode-mb", type=float, default=512.0, help="the attacked service's decode budget")
    args = ap.parse_args()
    if args.attack:
        attack_main(args)
        return

    from loadtest import LoadProcess, run_load

    api_key = os.environ.get(args.api_key_env, "") if args.api_key_env else None
    pngs = synth_pngs()
    reqs = build_requests(pngs, args.endpoint)
    if args.url:
        res = run_load(
            args.url, reqs, n_requests=args.requests, concurrency=args.concurrency, api_key=api_key
        )
        print(f"{args.url} /v1/{args.endpoint}: {res.summary()}")
        sys.exit(1 if res.failures else 0)

    import torch

    from faceforge.infer import FaceRecognizer
    from faceforge.serve.app import create_app
    from faceforge.serve.server import BackgroundServer

    torch.set_num_threads(args.threads)
    if args.model:
        rec = FaceRecognizer.from_model(args.model, detector=None)
        if rec.threshold is None:
            rec.threshold = 0.3  # an uncalibrated model: any threshold times the same
    elif args.arch == "quickstart":
        rec = quickstart_recognizer()
    else:
        rec = FaceRecognizer.from_name(args.arch, threshold=0.3, detector=None)
    if args.compare_batching:
        compare_batching(rec, reqs, args)
        return
    base = in_process_ms(rec, reqs, 40)
    with contextlib.ExitStack() as stack:
        if not args.same_process_client:
            run_load = stack.enter_context(LoadProcess()).run_load
        srv = stack.enter_context(BackgroundServer(create_app(rec)))
        run_load(srv.url, reqs, n_requests=2 * args.concurrency, concurrency=args.concurrency)  # warm-up
        res = run_load(srv.url, reqs, n_requests=args.requests, concurrency=args.concurrency)
    print(
        f"model {rec.name} {tuple(rec.face_cfg.input_size)} ({rec.backend}, {args.threads} torch thread(s)), "
        f"/v1/{args.endpoint}"
    )
    print(f"service : {res.summary()}")
    print(
        f"baseline: in-process {args.endpoint}, serial: median {base:.1f} ms/call = {1e3 / base:.1f} calls/s"
    )
    print(
        f"ratio   : service p50 / in-process = {res.percentile(50) / base:.2f}x "
        f"(with {args.concurrency} in flight on a serialised model, ~{args.concurrency}x is the "
        f"queueing floor); throughput {res.rps / (1e3 / base):.2f}x of in-process"
    )
    if res.failures:
        print("failures:", *res.failures[:5], sep="\n  ")
        sys.exit(1)


def quickstart_recognizer() -> Any:
    """configs/quickstart.yaml's model (what ``make demo`` trains: its backbone at its input size),
    randomly initialised."""
    from faceforge.infer import FaceRecognizer
    from faceforge.infer.loading import EmbeddingModel, torch_runner
    from faceforge.models.build import build_backbone
    from faceforge.train.config import load_config

    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"), [])
    module = build_backbone(cfg["model"]["backbone"], cfg["data"]["image_size"]).eval()
    model = EmbeddingModel(torch_runner(module, "cpu"), module.face_cfg, "quickstart", "", "torch", "weights")
    return FaceRecognizer(model, detector=None, threshold=0.3)


def compare_batching(rec: Any, reqs: list[Any], args: argparse.Namespace) -> None:
    """req/s and p50/p95 of one-at-a-time (max_batch 1) and micro-batched services, same run.

    The two services alternate at each concurrency level (one-at-a-time first, then batched, then
    both again, best of two each), so a change in the machine's load hits both alike.
    """
    from loadtest import LoadProcess, run_load

    from faceforge.serve.app import create_app
    from faceforge.serve.server import BackgroundServer

    print(
        f"model {rec.name} {tuple(rec.face_cfg.input_size)} ({rec.backend}, {args.threads} torch thread(s)), "
        f"/v1/{args.endpoint}, {args.requests} requests per run, client in "
        f"{'the server process' if args.same_process_client else 'another process'}"
    )
    with contextlib.ExitStack() as stack:
        if not args.same_process_client:
            run_load = stack.enter_context(LoadProcess()).run_load
        table = _compare_runs(rec, reqs, args, run_load, create_app, BackgroundServer)
    rec.disable_batching()
    for svc in _services(args)[1:]:
        one = (1, 1, None)
        r8 = table[(8, svc)][0].rps / table[(8, one)][0].rps
        p95 = table[(1, svc)][0].percentile(95) / table[(1, one)][0].percentile(95) - 1
        print(f"{_name(svc, rec)} / one-at-a-time at 8 clients: {r8:.2f}x req/s (target >= 2x)")
        print(f"p95 at 1 client, {_name(svc, rec)} vs one-at-a-time: {p95 * 100:+.1f} % (target <= +10 %)")


def _services(args: argparse.Namespace) -> list[tuple[int, int, bool | None]]:
    """(max_batch, batch workers, batch_process) of each compared service: one at a time first."""
    procs = {"auto": [None], "on": [True], "off": [False], "both": [True, False]}[args.batch_process]
    out: list[tuple[int, int, bool | None]] = [(1, 1, None)]
    out += [(args.max_batch, 1, p) for p in procs]
    if args.batch_workers > 1:
        out += [(args.max_batch, args.batch_workers, p) for p in procs]
    return out


def _name(svc: tuple[int, int, bool | None], rec: Any = None) -> str:
    mb, workers, proc = svc
    if mb == 1:
        return "one at a time"
    if proc is None and rec is not None:
        from faceforge.serve.app import auto_batch_process

        proc = auto_batch_process(rec)
    where = {True: ", model process", False: ", in-process", None: ""}[proc]
    return f"batched ({mb}{where})" + (f" x {workers} workers" if workers > 1 else "")


def _compare_runs(
    rec: Any, reqs: list[Any], args: argparse.Namespace, run_load: Any, create_app: Any, server: Any
) -> dict[tuple[int, int], Any]:
    """The runs of :func:`compare_batching`, printed as a table;
    {(clients, (max_batch, workers)): (result, calls)}."""
    print("| clients | service | req/s | p50 ms | p95 ms | model calls | crops/call |")
    print("|---|---|---|---|---|---|---|")
    table: dict[tuple[int, Any], Any] = {}
    for conc in (1, 8, 32):
        for _ in range(2):
            for svc in _services(args):
                mb, workers, proc = svc
                app = create_app(rec, max_batch=mb, batch_workers=workers, batch_process=proc)
                with server(app) as srv:
                    run_load(srv.url, reqs, n_requests=max(4, conc), concurrency=conc)  # warm-up
                    batcher = rec._batcher
                    calls0, rows0 = (batcher.batches, batcher.rows) if batcher else (0, 0)
                    res = run_load(srv.url, reqs, n_requests=args.requests, concurrency=conc)
                    calls = (batcher.batches - calls0, batcher.rows - rows0) if batcher else None
                if res.failures:
                    print("failures:", *res.failures[:5], sep="\n  ")
                    sys.exit(1)
                best = table.get((conc, svc))
                if best is None or res.rps > best[0].rps:
                    table[(conc, svc)] = (res, calls)
        for svc in _services(args):
            res, calls = table[(conc, svc)]
            name = _name(svc, rec)
            per = f"{calls[0]} | {calls[1] / max(1, calls[0]):.2f}" if calls else "- | 1.00"
            p50, p95 = res.percentile(50), res.percentile(95)
            print(f"| {conc} | {name} | {res.rps:.1f} | {p50:.1f} | {p95:.1f} | {per} |", flush=True)
    return table


def attack_main(args: argparse.Namespace) -> None:
    """The figures of docs/security.md: RSS and answers of a service in another process under attack."""
    import subprocess

    from loadtest import LoadRequest, flat_jpeg, header_only_jpeg, run_attack, run_load
    from PIL import Image

    shared = Path(os.environ.get("FACEFORGE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    yunet = shared / "models/detectors/yunet_s_640_640.onnx"
    detector = str(yunet) if yunet.is_file() else "none"
    png = io.BytesIO()
    Image.new("RGB", (6000, 6650), (120, 120, 120)).save(png, format="PNG", compress_level=9)
    kinds = {
        "JPEG 6000x6650 (39.9 MP, valid) + 1 in 4 declaring 6000x6700 (40.2 MP)": [
            ("x.jpg", header_only_jpeg(6000, 6700) if i % 4 == 0 else None, "image/jpeg")
            for i in range(args.attack_n)
        ],
        "PNG 6000x6650 (39.9 MP, flat, valid)": [("x.png", png.getvalue(), "image/png")] * args.attack_n,
        "JPEG declaring 6000x6600 (39.6 MP) truncated after the header": [
            ("x.jpg", header_only_jpeg(6000, 6600), "image/jpeg")
        ]
        * args.attack_n,
    }
    valid = flat_jpeg(6000, 6650)
    crops = list(synth_pngs(4).values())
    normal = [
        LoadRequest(
            "/v1/verify", {"a": ("a.png", crops[i], "image/png"), "b": ("b.png", crops[i + 1], "image/png")}
        )
        for i in range(4)
    ]
    print(f"attacked service: GhostFaceNetV1 (random weights), detector {Path(detector).name}, "
          f"--max-decode-mb {args.max_decode_mb:g}, {args.attack_n} concurrent uploads")  # fmt: skip
    for what, files in kinds.items():
        proc = subprocess.Popen(
            [sys.executable, str(HELPERS / "loadtest.py"), "--detector", detector,
             "--max-decode-mb", str(args.max_decode_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        try:
            port = int(proc.stdout.readline().split()[1])
            url = f"http://127.0.0.1:{port}"
            run_load(url, normal, n_requests=2, concurrency=1)  # warm-up
            attack = [
                LoadRequest("/v1/embed", {"image": (name, data if data is not None else valid, ctype)})
                for name, data, ctype in files
            ]
            size = max(len(r.files["image"][1]) for r in attack)
            res = run_attack(url, proc.pid, attack, normal, concurrency=args.attack_n)
        finally:
            proc.stdin.close()
            proc.wait(30)
        print(f"- {what}, {size / 1024:.0f} KiB per upload")
        print(f"  {res.summary()}")
        d = res.health.get("decode", {})
        print(
            f"  decode budget peak {d.get('peak_bytes', 0) / 2**20:.0f} MiB, "
            f"refused busy {d.get('refused_busy')}"
        )


if __name__ == "__main__":
    main()
