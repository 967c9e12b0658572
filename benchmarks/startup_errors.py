"""How fast each invalid setting fails, run the way a user runs it.

Each row of :data:`INVALID_SETTINGS` is one mistake of the hardening lists (issues 7 and 12:
settings out of range, and values a library underneath refuses); the script runs
``python main.py fit --config CONFIG <flags>`` for each in its own process, and reports the
seconds until the process exited (Python start-up and imports included) and the error's last
line, ``error: <message>`` (exit status 2, as for a malformed flag). ``tests/test_cli.py`` checks
the same rows in-process: each must raise its message before any rollout.

    python benchmarks/startup_errors.py --config configs/default.yaml --markdown benchmarks/results/startup_errors.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BASE_MODEL = "{base_model}"  # replaced by a local model folder whose tokenizer has no chat template
EMPTY_FOLDER = "{empty_folder}"  # replaced by an empty folder next to it

#: (mistake, command-line flags, a regular expression the error message must match)
INVALID_SETTINGS: list[tuple[str, list[str], str]] = [
    ("unknown task name", ["--data.tasks=[{name: basic_arith}]"],
     r"data.tasks: unknown Reasoning-Gym task 'basic_arith'. Did you mean basic_arithmetic"),
    ("unknown task option", ["--data.tasks=[{name: basic_arithmetic, config: {max_term: 2}}]"],
     r"data.tasks\[basic_arithmetic\].config: unknown option\(s\) \['max_term'\]; valid options: .*max_terms"),
    ("task option out of range", ["--data.tasks=[{name: basic_arithmetic, config: {min_terms: 5, max_terms: 2}}]"],
     r"data.tasks\[basic_arithmetic\].config=.*Reasoning-Gym refuses these values \(max_terms must be >= min_terms\)"),
    ("task option value refused in the task's own checks", ["--data.tasks=[{name: calendar_arithmetic, config: {year: 0}}]"],
     r"data.tasks\[calendar_arithmetic\].config=.*Reasoning-Gym refuses these values \(year must be a positive integer"),
    ("group size below 2", ["--model.grpo.num_generations=1"], r"model.grpo.num_generations=1: GRPO needs groups of at least 2"),
    ("rollouts that do not fit the micro-batch", ["--model.memory.micro_batch_tokens=20"],
     r"model.memory.micro_batch_tokens=20: one sequence .* does not fit; raise it to at least"),
    ("mixture k below 1", ["--model.mixture.k=0"], r"model.mixture.k=0: the support size must be at least 1"),
    ("mixture k above the vocabulary", ["--model.mixture.k=1000000"], r"model.mixture.k=1000000: above the model's vocabulary"),
    ("non-positive temperature", ["--model.mixture.temperature=0"], r"model.mixture.temperature=0(.0)?: must be > 0"),
    ("epsilon out of range", ["--model.grpo.epsilon=1.5"], r"model.grpo.epsilon=1.5, .* the clip range needs 0 < epsilon < 1"),
    ("beta out of range", ["--model.grpo.beta=-0.1"], r"model.grpo.beta=-0.1: the KL weight must be >= 0"),
    ("no chat template", [f"--model.model_name_or_path={BASE_MODEL}"],
     r"data.chat_template: the tokenizer of .* has no chat template; give one"),
    ("prompt + max_new_tokens beyond the context", ["--model.rollout.max_new_tokens=1000000"],
     r"model.rollout.max_new_tokens=1000000: .* beyond the model's context of \d+; lower it or set data.max_prompt_length"),
    ("reward weight of an unknown term", ["--model.reward.weights={corectness: 1.0}"],
     r"model.reward.weights: unknown terms \['corectness'\]; valid terms are: correctness"),
    ("reward function that cannot take the columns", ["--model.reward.reward_funcs={mine: math.sqrt}"],
     r"model.reward.reward_funcs\[mine\]: missing a required argument: 'x'; it is called as function\(prompts=, completions="),
    ("non-positive gradient clip", ["--model.grpo.max_grad_norm=0"], r"model.grpo.max_grad_norm=0(\.0)?: must be > 0; null disables"),
    ("negative completion-logging interval", ["--model.logging.log_completions_every_n_steps=-1"],
     r"model.logging.log_completions_every_n_steps=-1: must be >= 0 \(0 never logs completions\)"),
    ("negative exploration-logging interval", ["--model.logging.exploration_every_n_steps=-1"],
     r"model.logging.exploration_every_n_steps=-1: must be >= 0"),
    ("negative thinking budget", ["--model.rollout.thinking_budget=-1"], r"model.rollout.thinking_budget=-1: must be >= 0"),
    ("non-positive cold-stop entropy", ["--model.rollout.cold_stop_entropy=0"], r"model.rollout.cold_stop_entropy=0(\.0)?: must be > 0 nats"),
    ("empty stop string", ["--model.rollout.stop_strings=['</answer>', '']"],
     r"model.rollout.stop_strings=\['</answer>', ''\]: an empty string would end every completion"),
    ("unknown torch.compile mode", ["--model.rollout.compile_decode=fast"], r"model.rollout.compile_decode='fast': not a torch.compile mode; choose one of .*reduce-overhead"),
    ("non-positive Dirichlet concentration floor", ["--model.mixture.min_concentration=0"],
     r"model.mixture.min_concentration=0(\.0)? \(Dirichlet\): must be > 0"),
    ("infinite reward weight", ["--model.reward.weights={format: .inf}"],
     r"model.reward.weights=\{'format': inf\}: each weight must be a finite number"),
    ("prompt batch size below 1", ["--data.batch_size=0"], r"data.batch_size=0: must be at least 1"),
    ("negative validation split", ["--data.val_size=-1"], r"data.val_size=-1: must be >= 0"),
    ("negative DataLoader workers", ["--data.num_workers=-1"], r"data.num_workers=-1: must be >= 0"),
    ("non-positive task weight", ["--data.tasks=[{name: basic_arithmetic, weight: 0}]"],
     r"data.tasks\[basic_arithmetic\].weight=0(\.0)?: must be > 0"),
    ("prompt length limit below 1", ["--data.max_prompt_length=0"], r"data.max_prompt_length=0: must be at least 1"),
    ("model folder that does not exist", ["--model.model_name_or_path=/nonexistent/model"],
     r"model.model_name_or_path='/nonexistent/model': no such local folder, and not a Hugging Face hub id"),
    ("folder that holds no model", [f"--model.model_name_or_path={EMPTY_FOLDER}"],
     r"model.model_name_or_path='.*': cannot be loaded \(.*\); give a local model folder"),
    ("learning rate the optimizer refuses", ["--model.optimizer.init_args.lr=-1"],
     r"model.optimizer: AdamW refuses its arguments: Invalid learning rate: -1"),
    ("scheduler argument the scheduler refuses",
     ["--model.lr_scheduler=torch.optim.lr_scheduler.LinearLR", "--model.lr_scheduler.init_args.start_factor=2"],
     r"model.lr_scheduler: LinearLR refuses its arguments: Starting multiplicative factor expected"),
    ("LoRA rank below 1", ["--model.peft.r=0"], r"model.peft.r=0: the adapter rank must be at least 1"),
    ("LoRA with a reference that moves towards the policy", ["--model.peft.r=4", "--model.grpo.beta=0.1", "--model.grpo.sync_ref_model=true"],
     r"model.grpo.sync_ref_model=true with model.peft: with adapters the reference is the frozen base model"),
    ("curriculum on a task without one", ["--data.tasks=[{name: acre, config: {}}]", "--data.curriculum.tasks=[acre]"],
     r"data.curriculum.tasks: Reasoning-Gym has no curriculum for 'acre'"),
    ("curriculum threshold out of range", ["--data.curriculum.raise_above=1.5"], r"data.curriculum.raise_above=1.5: must be in \(0, 1\]"),
    ("curriculum with DataLoader workers", ["--data.curriculum.window=8", "--data.num_workers=2"],
     r"data.num_workers=2: data.curriculum replaces training items in place"),
    ("question file that does not exist", ["--data.tasks=[{name: question_file, config: {path: missing.jsonl}}]"],
     r"data.tasks\[question_file\].config=.*path=missing.jsonl: no such file"),
    ("question-file scorer that cannot be imported",
     ["--data.tasks=[{name: question_file, config: {path: configs/tasks/example_questions.jsonl, scorer: no_such_module.score}}]"],
     r"data.tasks\[question_file\].config=.*scorer='no_such_module.score': cannot import module 'no_such_module'"),
    ("task module that cannot be imported", ["--data.task_modules=[no_such_module]"],
     r"data.task_modules: cannot import 'no_such_module'"),
    ("FSDP1 without a GPU", ["--trainer.strategy=fsdp"], r"trainer.strategy=fsdp: .* runs on CUDA GPUs only"),
    ("GPU accelerator without a GPU", ["--trainer.accelerator=gpu"], r"trainer.accelerator=gpu: this machine has no CUDA GPU"),
]
ONLY_WITHOUT_GPU = {"FSDP1 without a GPU", "GPU accelerator without a GPU"}  # rows that are mistakes only on a machine without CUDA


def applicable_settings() -> list[tuple[str, list[str], str]]:
    """The rows that are mistakes on this machine."""
    return [row for row in INVALID_SETTINGS if not (row[0] in ONLY_WITHOUT_GPU and torch.cuda.is_available())]


def save_base_model(folder: Path) -> str:
    """A local model folder (the tiny random model) whose tokenizer has no chat template, as a
    base (not instruction-tuned) model has."""
    from motg_lightning.models import TINY_MODEL, load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(TINY_MODEL)
    tokenizer.chat_template = None
    load_causal_lm(TINY_MODEL).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def with_base_model(flags: list[str], base_model: str) -> list[str]:
    """``flags`` with ``{base_model}`` set to the base model's folder and ``{empty_folder}`` to an
    empty folder beside it (created here)."""
    empty = Path(base_model).parent / "empty-folder"
    empty.mkdir(exist_ok=True)
    return [flag.replace(BASE_MODEL, base_model).replace(EMPTY_FOLDER, str(empty)) for flag in flags]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--markdown", type=Path, help="write the table here as well")
    args = parser.parse_args()
    rows = ["| mistake | flags | seconds to exit | last line of the error |", "| --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as scratch:
        base_model = save_base_model(Path(scratch) / "base-model")
        for mistake, flags, _ in applicable_settings():
            command = [sys.executable, "main.py", "fit", "--config", args.config,
                       f"--trainer.default_root_dir={scratch}/runs", "--trainer.logger=false", *with_base_model(flags, base_model)]
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            message = lines[-1].replace(scratch, "<tmp>").replace("|", "\\|") if lines else "(no output)"
            message = message if len(message) <= 220 else message[:220] + " …"
            status = "" if done.returncode != 0 else " (exit 0!)"
            rows.append(f"| {mistake} | `{' '.join(flags)}` | {seconds:.1f}{status} | {message} |")
            print(rows[-1], flush=True)
    table = "\n".join(rows)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
