"""One full GRPO step (rollout, reward, update): this library against TRL's ``GRPOTrainer``, on
the same model, prompts, group size, prompts per step and completion length, in one run.

    python benchmarks/grpo_step.py                  # CPU, embedded SmolLM2, 1 prompt x 8 x 64 tokens, fp32
    python benchmarks/grpo_step.py --device cuda --dtype bfloat16 --model random:SmolLM2-135M-Instruct \\
        --prompts-per-step 8 --new-tokens 256
    python benchmarks/grpo_step.py --methods trl trl+lora dirichlet dirichlet+lora   # LoRA (r = --lora-r) against full training

TRL's trainer and ours do not share a process, so the rounds interleave processes: each of
``--rounds`` rounds runs every method's process in turn, in an order rotated each round (A B C,
B C A, ...). A process does one untimed warm-up step (its time, compilation and first-call costs
included, is reported as ``warmup_seconds``) and then ``--steps`` timed steps, whose mean is that
round's s/step. Reported per method: the median s/step over the rounds and its spread (min-max),
the time ratio to TRL's (to the first method's without ``trl``) computed round by round, i.e. each
round's s/step over the baseline's in the same round (median and min-max; below 1 is faster), the
median warm-up step, and the peak memory of its processes (max over rounds; RSS on CPU, allocated
on CUDA). EOS is suppressed on both sides, so every completion has exactly ``--new-tokens`` tokens
and the work is equal. A method ``M+lora`` is ``M`` training LoRA adapters of rank ``--lora-r`` on
every linear layer of the decoder (PEFT; TRL's ``peft_config``, ours ``model.peft``), the
reference being the base model with the adapters disabled on both sides. ``--method M`` runs one
process and prints its JSON line. TRL is an optional
dependency of this script only (``pip install trl``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from method_processes import measure_rounds, memory_kind, peak_memory_mib, write_results
from rounds import first_present, median, number, summarize, summary_columns, table

from motg_lightning.rules import REGISTRY

# TRL's trainer, then every registered rule at its defaults and τ = 0.9; each also with LoRA adapters
METHODS = [name + variant for name in ["trl", *REGISTRY] for variant in ("", "+lora")]
DEFAULT_METHODS = ["trl", "discrete", "dirichlet", "sampled"]


def items(args, tokenizer) -> list[dict]:
    from motg_lightning.lightning.data import ReasoningGymDataModule, TaskSpec

    data = ReasoningGymDataModule(
        tasks=[TaskSpec("basic_arithmetic", config={"max_terms": 2, "max_digits": 1})], tokenizer=args.model,
        train_size=args.prompts_per_step * (args.steps + 1), val_size=1, test_size=1, seed=0,
    )
    entries = data.generate_entries()["train"]
    return [{"prompt_ids": data.build_prompt(tokenizer, e["question"]), "entry": e, "task": "basic_arithmetic"} for e in entries]


def lora(args):
    """The LoRA config of a ``+lora`` method (None for the others)."""
    from motg_lightning.adapters import LoraOptions

    return LoraOptions(r=args.lora_r, lora_alpha=2 * args.lora_r).lora_config() if args.method.endswith("+lora") else None


def run_trl(args) -> tuple[float, list[float], list[float]]:
    import json as js

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from motg_lightning.models import load_causal_lm, load_tokenizer
    from motg_lightning.rewards.scoring import RewardFunction

    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, dtype=args.dtype)
    rows = items(args, tokenizer)
    dataset = Dataset.from_list([{"prompt": tokenizer.decode(r["prompt_ids"]), "entry": js.dumps(r["entry"])} for r in rows])
    scorer = RewardFunction()

    def reward(completions, entry, **_):
        return scorer(completions, [js.loads(e) for e in entry]).total.tolist()

    class Clock(TrainerCallback):  # steps after the first: from one step's end to the next's
        def __init__(self):
            self.marks, self.lengths = [], []

        def on_step_begin(self, *_, **__):
            if not self.marks:
                self.marks.append(time.perf_counter())  # the warm-up step's start, its batch fetched

        def on_step_end(self, *_, **__):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            self.marks.append(time.perf_counter())

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])

    clock = Clock()
    config = GRPOConfig(
        output_dir="/tmp/grpo_step_trl", num_generations=args.group_size,
        per_device_train_batch_size=args.group_size * args.prompts_per_step, max_completion_length=args.new_tokens,
        temperature=0.9, beta=args.beta, learning_rate=1e-6, max_steps=args.steps + 1, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=not args.device.startswith("cuda"),
        bf16=args.dtype == "bfloat16", seed=0, shuffle_dataset=False,
        generation_kwargs={"min_new_tokens": args.new_tokens},  # every completion has full length
        gradient_checkpointing=args.gradient_checkpointing, optim="adamw_torch_fused",
    )
    GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer,
                callbacks=[clock], peft_config=lora(args)).train()
    steps = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    return steps[0], steps[1:], clock.lengths[1:]


def run_ours(args) -> tuple[float, list[float], list[float]]:
    import lightning as L
    from torch.utils.data import DataLoader

    from motg_lightning.lightning.data import collate_prompts
    from motg_lightning.models import load_tokenizer
    from motg_lightning.lightning.module import MoTGRPOModule
    from motg_lightning.lightning.options import GRPOOptions, MemoryOptions, RolloutOptions

    tokenizer = load_tokenizer(args.model)
    rows = items(args, tokenizer)

    class Clock(L.Callback):
        def __init__(self):
            self.marks, self.lengths = [], []

        def on_train_batch_start(self, *_):
            self.marks.append(time.perf_counter())

        def on_train_batch_end(self, trainer, *_):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            self.marks[-1] = time.perf_counter() - self.marks[-1]
            self.lengths.append(float(trainer.callback_metrics["train/completion_length/mean"]))

    clock = Clock()
    rule = REGISTRY[args.method.removesuffix("+lora")].rule(temperature=0.9)
    module = MoTGRPOModule(
        args.model, dtype=args.dtype, mixture=rule,
        rollout=RolloutOptions(max_new_tokens=args.new_tokens, stop_strings=[], compile_decode=args.compile_decode),
        grpo=GRPOOptions(num_generations=args.group_size, beta=args.beta),
        memory=MemoryOptions(micro_batch_size=args.group_size * args.prompts_per_step,
                             gradient_checkpointing=args.gradient_checkpointing),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-6, fused=True),  # TRL's default optimizer
        peft=lora(args),
    )
    module.configure_model()
    module.settings.eos_ids = torch.tensor([-1])  # every completion has full length, as TRL's min_new_tokens
    loader = DataLoader(rows, batch_size=args.prompts_per_step, collate_fn=lambda b: collate_prompts(b, tokenizer.pad_token_id))
    trainer = L.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu", devices=1, max_steps=args.steps + 1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
        precision="bf16-true" if args.dtype == "bfloat16" else "32-true",
    )
    trainer.fit(module, loader)
    return clock.marks[0], clock.marks[1:], clock.lengths[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded:SmolLM2-135M-Instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompts-per-step", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=3, help="measured steps after one warm-up step, in each process")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, one process per method each (default 3)")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                        help="on both sides (TRL's GRPOConfig turns it on by default)")
    parser.add_argument("--compile-decode", default=None, metavar="MODE",
                        help="torch.compile mode of our rollout's decode step, e.g. reduce-overhead (CUDA graphs)")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=METHODS,
                        help="trl and any rule of motg_lightning.rules.REGISTRY, each alone or +lora (default: %(default)s)")
    parser.add_argument("--lora-r", type=int, default=16, help="adapter rank of the +lora methods (alpha = 2 r)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/grpo_step.json"))
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        torch.manual_seed(0)
        warmup, seconds, lengths = (run_trl if args.method.startswith("trl") else run_ours)(args)
        print(json.dumps({"method": args.method, "seconds_per_step": sum(seconds) / len(seconds), "steps": seconds,
                          "warmup_seconds": warmup, "mean_completion_length": sum(lengths) / max(len(lengths), 1),
                          "peak_memory_mib": peak_memory_mib(args.device), "memory_kind": memory_kind(args.device)}))
        return

    per_round = measure_rounds(__file__, args.methods, sys.argv[1:], args.rounds)
    methods = [method for method in args.methods if any(method in rows for rows in per_round)]
    baseline = first_present(["trl", *methods], methods)
    figures = [{method: row["seconds_per_step"] for method, row in rows.items()} for rows in per_round]
    results = []
    for method, summary in summarize(figures, methods, baseline).items():
        runs = [rows[method] for rows in per_round if method in rows]
        results.append({
            "method": method, "seconds_per_step": summary["median"], "rounds": summary["rounds"], "spread": summary["spread"],
            "baseline": baseline, "ratios": summary["ratios"], "ratio_median": summary["ratio_median"],
            "ratio_spread": summary["ratio_spread"], "time_vs_trl": summary["ratio_median"] if baseline == "trl" else None,
            "warmup_seconds": median([run["warmup_seconds"] for run in runs]), "steps": [run["steps"] for run in runs],
            "mean_completion_length": statistics.mean(run["mean_completion_length"] for run in runs),
            "peak_memory_mib": max(run["peak_memory_mib"] for run in runs), "memory_kind": runs[0]["memory_kind"] + ", max over rounds",
        })
    print(f"\nmodel {args.model}, {args.device}, {args.dtype}, {args.prompts_per_step} prompt(s) x {args.group_size} "
          f"x {args.new_tokens} tokens, beta {args.beta}, LoRA rank {args.lora_r} (+lora), gradient checkpointing {args.gradient_checkpointing}; {args.rounds} "
          f"interleaved rounds of a process per method, {args.steps} timed steps each: median s/step and min-max, "
          f"time ratio to {baseline or 'no baseline'} round by round")
    columns = summary_columns("seconds_per_step", "s/step", 2, f"vs {'TRL' if baseline == 'trl' else baseline}")
    print(table(results, [*columns, ("mean len", 10, lambda row: number(row["mean_completion_length"], 1))]))
    write_results(args.json, args, results)


if __name__ == "__main__":
    main()
