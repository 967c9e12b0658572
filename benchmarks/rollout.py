"""Rollout speed and memory: our batched mixture rollout against Hugging Face ``generate`` and a
naive per-step loop in the style of the paper's public code, on the same model, batch and fixed
generation length, in one run.

    python benchmarks/rollout.py                               # CPU, embedded SmolLM2, batch 8, 128 tokens
    python benchmarks/rollout.py --device cuda --dtype bfloat16 --model random:SmolLM2-135M-Instruct \\
        --batch 64 --new-tokens 256 --methods hf_generate hf_generate_static discrete dirichlet

All methods run in ONE process on one loaded model: each method's callable is built and called
once untimed (the warm-up; for a compiled decode step, or HF's static cache, this is where it
compiles, once per method), then ``--rounds`` rounds each call every method once, interleaved and
in an order rotated each round (A B C, B C A, ...), so drift of a shared machine falls on all
methods alike. Reported per method: the median tokens/s over the rounds and its spread (min-max),
the ratio to the baseline (``hf_generate_static`` when run, else ``hf_generate``) computed round by
round (median and min-max), and the warm-up call's seconds (one-off cost, compilation included).
``--repeats`` applies only to the one-process modes below (best of that many timed calls).

Peak memory: on CUDA, by default, the peak allocated memory during each method's timed calls in the
shared process (peak statistics reset before each call; max over rounds). It includes the weights
and whatever the other methods keep allocated between calls (HF's static cache, our kept KV cache
and CUDA-graph pools), so it overstates a method's own footprint; ``--memory`` gives the exact one.
On the CPU one process's RSS cannot be split between methods, so memory is measured only with
``--memory`` (the default on the CPU): each method then also runs alone in its own process (warm-up
plus ``--repeats`` timed calls), whose peak RSS (CPU) or allocated memory after warm-up (CUDA) is
reported; its speed is not used. ``--no-memory`` skips those processes and reports no memory on the
CPU. ``--method M`` runs one method alone in this process and prints its JSON line (what
``--memory`` uses).

Prints a table and writes JSON. Every sequence generates exactly ``--new-tokens`` tokens (EOS and
stop strings are ignored), so tokens/s compare like with like.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch
from method_processes import measure_each, memory_kind, peak_memory_mib, write_results
from rounds import first_present, median, number, rotated, round_ratios, summarize, summary_columns, table

from motg_lightning.rules import HRPO, REGISTRY, Discrete, MixtureRule, attach_rule_parameters, dense

BASELINES = ["hf_generate", "hf_generate_static", "naive_loop"]
QUESTION = "Calculate 7 + 8. Think step by step, then give the answer."


def prompts(tokenizer, batch: int, device: str):
    text = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text + "<think>\n", add_special_tokens=False, return_tensors="pt").input_ids.repeat(batch, 1)
    return ids.to(device), torch.ones_like(ids).to(device)


def benchmark_rule(name: str) -> MixtureRule:
    """The registered rule ``name`` at its defaults, mixing the paper's k = 2 tokens; the rules of
    :mod:`motg_lightning.rules.dense`, which blend the whole distribution, keep their k = 16, HRPO
    its top 50, and Discrete has no k."""
    rule = REGISTRY[name].rule
    if rule in (Discrete, HRPO) or rule.__module__ == dense.__name__:
        return rule()
    return rule(k=2)


def run_ours(model, tokenizer, rule_name: str, ids, mask, new_tokens: int, compile_decode: str | None):
    from motg_lightning.lightning.options import RolloutOptions
    from motg_lightning.rollout.generate import generate

    rule = benchmark_rule(rule_name)
    attach_rule_parameters(model, rule)  # HRPO's gate (other rules have no parameters; nothing else reads it)
    options = RolloutOptions(max_new_tokens=new_tokens, stop_strings=[], compile_decode=compile_decode)
    settings = options.settings(tokenizer, eos_ids=[-1])  # no EOS: every sequence makes all new tokens
    decoder = settings.decoder()  # kept across calls: a compiled step is captured once
    return lambda: generate(model, rule, ids, mask, settings, decoder)


def run_hf(model, ids, mask, new_tokens: int, static: bool):
    options = dict(do_sample=True, temperature=0.9, top_k=0, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                   pad_token_id=model.config.pad_token_id)
    if static:
        options["cache_implementation"] = "static"
    return lambda: model.generate(input_ids=ids, attention_mask=mask, **options)


def run_naive(model, tokenizer, ids, new_tokens: int):
    """The paper code's shape: a Python loop over sequences every step, host syncs, and the whole
    text re-decoded each step to look for </think>; Dirichlet top-2 mixtures while thinking."""
    from transformers import DynamicCache

    from motg_lightning.rollout.decoder import cache_keyword

    embedding = model.get_input_embeddings()
    keyword = cache_keyword(model)

    @torch.no_grad()
    def loop():
        cache = DynamicCache(config=model.config)
        logits = model(input_ids=ids, use_cache=True, **{keyword: cache}).logits[:, -1]
        texts = [[] for _ in range(ids.shape[0])]
        for _ in range(new_tokens):
            inputs = []
            for row in range(ids.shape[0]):
                probs = torch.softmax(logits[row].float() / 0.9, -1)
                top_probs, top_ids = probs.topk(2)
                thinking = "</think>" not in tokenizer.decode(texts[row])
                if thinking:
                    weights = torch.distributions.Dirichlet(top_probs / top_probs.sum()).sample()
                    index = int(torch.multinomial(weights, 1).item())
                    token = int(top_ids[index].item())
                    inputs.append((weights[:, None].to(embedding.weight.dtype) * embedding(top_ids)).sum(0))
                else:
                    token = int(torch.multinomial(probs, 1).item())
                    inputs.append(embedding(torch.tensor(token, device=ids.device)))
                texts[row].append(token)
            logits = model(inputs_embeds=torch.stack(inputs)[:, None], use_cache=True, **{keyword: cache}).logits[:, -1]
        return texts

    return loop


def setup(args):
    """Load the model and prompts once; return a function from a method's name to its callable."""
    from motg_lightning.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, dtype=args.dtype).to(args.device).eval()
    ids, mask = prompts(tokenizer, args.batch, args.device)

    def build(method: str):
        if method in REGISTRY:
            return run_ours(model, tokenizer, method, ids, mask, args.new_tokens, args.compile_decode)
        if method == "naive_loop":
            return run_naive(model, tokenizer, ids, args.new_tokens)
        return run_hf(model, ids, mask, args.new_tokens, static=method == "hf_generate_static")

    return build


def timed(call, cuda: bool) -> float:
    """Seconds of one call, the device's queue drained before and after on CUDA."""
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(args) -> dict:
    """``args.method`` alone in this process: one warm-up call, then the best of ``--repeats``."""
    cuda = args.device.startswith("cuda")
    call = setup(args)(args.method)
    warmup = timed(call, cuda)  # (and compilation, for the static cache or a compiled decode step)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    best = min(timed(call, cuda) for _ in range(args.repeats))
    return {"method": args.method, "seconds": best, "tokens_per_s": args.batch * args.new_tokens / best,
            "warmup_seconds": warmup, "peak_memory_mib": peak_memory_mib(args.device), "memory_kind": memory_kind(args.device)}


def measure_interleaved(args) -> tuple[list[dict[str, float]], dict[str, float], dict[str, float]]:
    """Every method in this process: per round, tokens/s by method; warm-up seconds by method; and
    on CUDA the peak allocated MiB during each method's timed calls (empty on the CPU). A method
    whose set-up or warm-up fails is reported on stderr and left out."""
    cuda = args.device.startswith("cuda")
    build = setup(args)
    calls, warmups = {}, {}
    for method in args.methods:
        try:
            call = build(method)
            warmups[method] = timed(call, cuda)
            calls[method] = call
        except Exception:
            print(f"{method}: failed\n{traceback.format_exc()[-3000:]}", file=sys.stderr)
    per_round, peaks = [], {}
    for turn in range(args.rounds):
        figures = {}
        for method in rotated(list(calls), turn):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            figures[method] = args.batch * args.new_tokens / timed(calls[method], cuda)
            if cuda:
                peaks[method] = max(peaks.get(method, 0.0), peak_memory_mib(args.device))
        per_round.append(figures)
        print(f"round {turn + 1} of {args.rounds}: done", file=sys.stderr, flush=True)
    return per_round, warmups, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, one timed call per method each (default 3)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls of a method run alone (--method, --memory); the best counts")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                        help="also run each method alone in its own process for its peak memory (default: on the CPU only)")
    parser.add_argument("--compile-decode", default=None, metavar="MODE",
                        help="torch.compile mode of our decode step, e.g. reduce-overhead (CUDA graphs); default eager")
    parser.add_argument("--methods", nargs="+", default=["hf_generate", "naive_loop", *REGISTRY], choices=[*BASELINES, *REGISTRY],
                        help="the baselines and any rule of motg_lightning.rules.REGISTRY")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/rollout.json"))
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(measure(args)))
        return

    cuda = args.device.startswith("cuda")
    per_round, warmups, peaks = measure_interleaved(args)
    methods = [method for method in args.methods if method in warmups]
    baseline = first_present(["hf_generate_static", "hf_generate"], methods)
    alone, args.memory = {}, args.memory if args.memory is not None else not cuda
    if args.memory:
        alone = {row["method"]: row for row in measure_each(__file__, methods, sys.argv[1:])}
    results = []
    for method, summary in summarize(per_round, methods, baseline).items():
        if method in alone:
            peak, kind = alone[method]["peak_memory_mib"], alone[method]["memory_kind"] + ", own process"
        else:
            peak, kind = peaks.get(method), (memory_kind(args.device) + ", shared process") if method in peaks else None
        results.append({
            "method": method, "tokens_per_s": summary["median"], "rounds": summary["rounds"], "spread": summary["spread"],
            "baseline": baseline, "ratios": summary["ratios"], "ratio_median": summary["ratio_median"],
            "ratio_spread": summary["ratio_spread"], "warmup_seconds": warmups[method], "peak_memory_mib": peak, "memory_kind": kind,
            **{f"vs_{other}": median(round_ratios(per_round, method, other)) for other in ("hf_generate", "hf_generate_static")},
        })
    print(f"\nmodel {args.model}, {args.device}, {args.dtype}, batch {args.batch}, {args.new_tokens} new tokens, "
          f"our decode step: {args.compile_decode or 'eager'}; {args.rounds} interleaved rounds: median tokens/s and min-max, "
          f"ratio to {baseline or 'no baseline'} round by round")
    columns = summary_columns("tokens_per_s", "tokens/s", 1, {"hf_generate_static": "vs static", "hf_generate": "vs generate"}.get(baseline, "ratio"))
    if baseline == "hf_generate_static" and "hf_generate" in methods:
        columns.insert(5, ("vs generate", 13, lambda row: number(row["vs_hf_generate"], 2) + "x"))
    print(table(results, columns))
    write_results(args.json, args, results)


if __name__ == "__main__":
    main()
