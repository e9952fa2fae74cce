"""Where one training step's time goes: a bare MiniLM step (forward, backward, clipping, fused AdamW) under
`torch.profiler`, its operators' own CPU time grouped by kind. Used by docs/performance.md (issue 4).

    python -m scripts.profile_step                  # batch 32 x 16 tokens (an sst2 batch) and 32 x 64 (a pair batch)
    python -m scripts.profile_step --lengths 128
    python -m scripts.profile_step --side-by-side   # one process on every core vs one single-threaded process
                                                    # per core at once (how the experiment scripts run jobs)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: the weights are local

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from mtdnn.config import DEFAULT_MODEL  # noqa: E402
from mtdnn.model import MTDNNModel  # noqa: E402
from mtdnn.tasks import GLUE_TASKS  # noqa: E402

KINDS = [  # (kind, substrings of aten operator names), first match wins
    ("matmul (linear layers, forward and backward)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")),
    ("attention kernel (SDPA)", ("scaled_dot_product", "_flash_attention", "_efficient_attention")),
    ("optimizer (fused AdamW)", ("_fused_adamw",)),
    ("gradient clipping (norms, scaling)", ("linalg_vector_norm", "_foreach_norm", "_foreach_mul", "aten::norm")),
    ("word-embedding gradient (dense 30,522 x 384)", ("embedding_dense_backward", "embedding_backward",
                                                      "index_add", "aten::zero_", "aten::fill_")),
    ("dropout", ("dropout", "bernoulli", "native_dropout")),
    ("LayerNorm", ("layer_norm",)),
    ("GELU", ("gelu",)),
    ("element-wise adds, copies, reductions", ("aten::add", "aten::copy_", "aten::sum", "aten::mul", "aten::div",
                                               "aten::cat", "aten::clone", "aten::to")),
]


def kind_of(name: str) -> str:
    return next((kind for kind, keys in KINDS if any(key in name for key in keys)), "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--time-only", action="store_true", help="print one JSON line of ms per step, no profile")
    parser.add_argument("--start-at", type=float, default=None,
                        help="after warm-up, wait until this time.time() before timing (lines processes up)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="compare one process on every core with one single-threaded process per core")
    args = parser.parse_args()
    if args.side_by_side:
        side_by_side(args)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MTDNNModel.from_encoder(DEFAULT_MODEL, {"sst2": GLUE_TASKS["sst2"]}).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    if not args.time_only:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size}; "
              f"{args.steps} profiled steps per length after 3 warm-up steps")
    timings = {}
    for length in args.lengths:
        ids = torch.randint(1000, 20000, (args.batch_size, length))
        mask, types = torch.ones_like(ids), torch.zeros_like(ids)
        labels = torch.randint(0, 2, (args.batch_size,))

        def step() -> None:
            loss = model("sst2", input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()

        for _ in range(3):
            step()
        if args.start_at:
            time.sleep(max(0.0, args.start_at - time.time()))
            args.start_at = None  # only the first length starts together; the others follow in step
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - started) / args.steps
        timings[length] = seconds * 1000
        if args.time_only:
            continue
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(args.steps):
                step()
        totals: dict[str, float] = defaultdict(float)
        for event in profiler.key_averages():
            totals[kind_of(event.key)] += event.self_cpu_time_total
        whole = sum(totals.values())
        print(f"\n{args.batch_size} x {length} tokens: {seconds * 1000:.0f} ms per step (unprofiled)")
        print("| kind of work | share of the step's operator time |\n|---|---|")
        for kind, micros in sorted(totals.items(), key=lambda item: -item[1]):
            print(f"| {kind} | {micros / whole:.1%} |")
    if args.time_only:
        print(json.dumps(timings))


def side_by_side(args) -> None:
    """Steps per second of the machine: one process using every core, then one 1-thread process per core, all at
    once (each runs the same bare steps, and all start timing at the same moment after loading and warm-up)."""
    cores = len(os.sched_getaffinity(0))
    command = [sys.executable, "-m", "scripts.profile_step", "--time-only", "--steps", str(args.steps), "--batch-size",
               str(args.batch_size), "--lengths", *map(str, args.lengths)]
    alone = json.loads(subprocess.run([*command, "--threads", str(cores)], capture_output=True, text=True,
                                      check=True).stdout.splitlines()[-1])
    start_at = time.time() + 30  # well after every process has loaded the model and warmed up: all time one window
    children = [subprocess.Popen([*command, "--threads", "1", "--start-at", str(start_at)], stdout=subprocess.PIPE,
                                 text=True) for _ in range(cores)]
    each = [json.loads(child.communicate()[0].splitlines()[-1]) for child in children]
    print(f"{cores} cores, batch {args.batch_size}, {args.steps} timed steps after 3 warm-up steps\n")
    print("| tokens per example | 1 process x {0} threads: ms/step | {0} processes x 1 thread: ms/step (each) | "
          "steps/s, side by side vs one process |".format(cores))
    print("|---|---|---|---|")
    for length in args.lengths:
        one, several = alone[str(length)], [timing[str(length)] for timing in each]
        gain = sum(1000 / ms for ms in several) / (1000 / one)
        print(f"| {length} | {one:.0f} | {', '.join(f'{ms:.0f}' for ms in several)} | {gain:.2f}x |")


if __name__ == "__main__":
    main()
