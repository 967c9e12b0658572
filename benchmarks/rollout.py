"""Rollout speed and memory: our batched mixture rollout against Hugging Face ``generate`` and a
naive per-step loop in the style of the paper's public code, on the same model, batch and fixed
generation length, in one run.

    python benchmarks/rollout.py                               # CPU, embedded SmolLM2, batch 8, 128 tokens
    python benchmarks/rollout.py --device cuda --dtype bfloat16 --model random:SmolLM2-135M-Instruct \\
        --batch 64 --new-tokens 256 --methods hf_generate hf_generate_static discrete dirichlet

Each method runs in its own process (so CPU peak memory is its own), after one warm-up call.
Prints a table and writes JSON. Every sequence generates exactly ``--new-tokens`` tokens (EOS and
stop strings are ignored), so tokens/s compare like with like.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
from method_processes import measure_each, write_results

from motg_lightning.rules import REGISTRY, Discrete, MixtureRule, dense

BASELINES = ["hf_generate", "hf_generate_static", "naive_loop"]
QUESTION = "Calculate 7 + 8. Think step by step, then give the answer."


def prompts(tokenizer, batch: int, device: str):
    text = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text + "<think>\n", add_special_tokens=False, return_tensors="pt").input_ids.repeat(batch, 1)
    return ids.to(device), torch.ones_like(ids).to(device)


def benchmark_rule(name: str) -> MixtureRule:
    """The registered rule ``name`` at its defaults, mixing the paper's k = 2 tokens; the rules of
    :mod:`motg_lightning.rules.dense`, which blend the whole distribution, keep their k = 16, and
    Discrete has no k."""
    rule = REGISTRY[name].rule
    if rule is Discrete or rule.__module__ == dense.__name__:
        return rule()
    return rule(k=2)


def run_ours(model, tokenizer, rule_name: str, ids, mask, new_tokens: int, compile_decode: str | None):
    from motg_lightning.lightning.options import RolloutOptions
    from motg_lightning.rollout.generate import generate

    rule = benchmark_rule(rule_name)
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


def measure(args) -> dict:
    from motg_lightning.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, dtype=args.dtype).to(args.device).eval()
    ids, mask = prompts(tokenizer, args.batch, args.device)
    if args.method in REGISTRY:
        call = run_ours(model, tokenizer, args.method, ids, mask, args.new_tokens, args.compile_decode)
    elif args.method == "naive_loop":
        call = run_naive(model, tokenizer, ids, args.new_tokens)
    else:
        call = run_hf(model, ids, mask, args.new_tokens, static=args.method == "hf_generate_static")
    call()  # warm-up (and compilation, for the static cache)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    best = min(seconds)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": args.method, "seconds": best, "tokens_per_s": args.batch * args.new_tokens / best,
            "peak_memory_mib": peak, "memory_kind": "cuda allocated" if cuda else "process RSS"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
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

    results = measure_each(__file__, args.methods, sys.argv[1:])
    speeds = {r["method"]: r["tokens_per_s"] for r in results}
    print(f"\nmodel {args.model}, {args.device}, {args.dtype}, batch {args.batch}, {args.new_tokens} new tokens, "
          f"our decode step: {args.compile_decode or 'eager'}")
    print(f"{'method':<20}{'tokens/s':>10}{'vs generate':>13}{'vs static':>11}{'peak MiB':>11}")
    for row in results:
        for baseline in ("hf_generate", "hf_generate_static"):
            row[f"vs_{baseline}"] = row["tokens_per_s"] / speeds[baseline] if baseline in speeds else float("nan")
        print(f"{row['method']:<20}{row['tokens_per_s']:>10.1f}{row['vs_hf_generate']:>12.2f}x"
              f"{row['vs_hf_generate_static']:>10.2f}x{row['peak_memory_mib']:>11.0f}")
    write_results(args.json, args, results)


if __name__ == "__main__":
    main()
