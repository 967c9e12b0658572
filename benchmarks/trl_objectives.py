"""This library's GRPO objective against TRL 1.16's ``GRPOTrainer._compute_loss``, on one batch.

    python benchmarks/trl_objectives.py --json benchmarks/results/trl_objectives.json

For every objective both offer (each ``loss_type``, GSPO's sequence level, two-sided clipping,
the KL term, the entropy bonus), one row: the loss TRL's real ``_compute_loss`` returns on a
real ``GRPOTrainer`` (built on CPU over the tiny random Llama ``tiny-random:SmolLM2-135M-Instruct``)
and the loss of :func:`motg_lightning.grpo.objective.micro_batch_loss`, with the policy term
:meth:`GRPOOptions.policy_term` builds from the same option values (each side's defaults for the
rest), and the largest differences of their gradients with respect to the per-token
log-probabilities (``∂/∂logp``) and to every model parameter (``∂/∂θ``, through the entropy too).

Both sides get the same tensors: the log-probabilities and entropies come from TRL's own
``_get_per_token_logps_and_entropies`` on the same model and batch (TRL calls it inside
``_compute_loss``; a wrapper on the trainer instance keeps its outputs' gradients). The batch: 6
completions in groups of 3, left-padded prompts, completions of 1 to 6 tokens (masks with
trailing zeros), mixed-sign advantages (one 0), old log-probabilities = current − noise so ratios
≠ 1 and clipping, the cap δ and CISPO's cap act; one process, one micro-batch, no gradient
accumulation (``num_items_in_batch`` = the mask's count). Notes under the table say where the two
differ in form outside this batch. Exit status 1 if a row differs by more than
1e-5 (relative above 1). TRL is an optional dependency of this script only (``pip install trl``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers
import trl
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from motg_lightning.grpo.objective import Normalisers, micro_batch_loss
from motg_lightning.lightning.grpo_options import GRPOOptions
from motg_lightning.models import TINY_MODEL, load_causal_lm, load_tokenizer

TOLERANCE = 1e-5
GROUP, LENGTHS, PROMPT = 3, [6, 3, 5, 1, 4, 6], 3
ADVANTAGES = [1.2, -0.3, -0.9, 0.0, 0.7, -0.7]
#: (setting, options both sides take, options of TRL's only)
SETTINGS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("grpo", {"loss_type": "grpo"}, {}),
    ("bnpo", {"loss_type": "bnpo"}, {}),
    ("dr_grpo", {"loss_type": "dr_grpo"}, {}),
    ("dapo", {"loss_type": "dapo"}, {}),
    ("cispo (epsilon_high=5)", {"loss_type": "cispo", "epsilon_high": 5.0}, {}),
    ("sapo", {"loss_type": "sapo"}, {}),
    ("luspo (sequence level)", {"loss_type": "luspo", "importance_sampling_level": "sequence"}, {}),
    ("vespo", {"loss_type": "vespo"}, {}),
    ("GSPO (grpo, sequence level)", {"loss_type": "grpo", "importance_sampling_level": "sequence"}, {}),
    ("dapo, delta=1.5", {"loss_type": "dapo", "delta": 1.5}, {}),
    ("dapo, beta=0.04 (1)", {"loss_type": "dapo", "beta": 0.04}, {"use_bias_correction_kl": False}),
    ("dapo, entropy_coef=0.01 (2)", {"loss_type": "dapo", "entropy_coef": 0.01}, {}),
    ("dapo, beta=0.04, use_bias_correction_kl (3)", {"loss_type": "dapo", "beta": 0.04, "use_bias_correction_kl": True}, {}),
]
NOTES = [
    ("(1) TRL with use_bias_correction_kl=False: both add beta × the k3 KL estimate on every counted step (ours "
     "clamps its log-ratio to ±20 and its value to ≤ 10, verl's low_var_kl; inactive here)."),
    ("(2) Both subtract entropy_coef × the token mean of the entropy over the counted steps (ours: the `bonus_mask` "
     "steps, here the completion mask; TRL: its effective mask), one micro-batch. With several micro-batches TRL "
     "averages each one's own token mean (÷ gradient accumulation steps), ours takes the batch's token mean "
     "(÷ its `bonus_steps`): they differ when micro-batches hold unequal token counts."),
    ("(3) use_bias_correction_kl=True (TRL 1.16's default; false in this library, which keeps the paper's plain "
     "k3 KL) multiplies each step's k3 KL by the differentiable importance ratio π/π_old (DeepSeek-V3.2)."),
]


def batch(trainer: GRPOTrainer, vocab: int, pad: int) -> dict[str, Any]:
    """TRL's ``inputs`` of one micro-batch, with old and reference log-probabilities off the current ones."""
    n, steps = len(LENGTHS), max(LENGTHS)
    generator = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(vocab, (n, PROMPT), generator=generator)
    prompt_mask = torch.ones(n, PROMPT, dtype=torch.long)
    prompt_mask[::2, 0] = 0  # left padding
    completion_mask = (torch.arange(steps) < torch.tensor(LENGTHS).unsqueeze(-1)).long()
    completion_ids = torch.randint(vocab, (n, steps), generator=generator)
    prompt_ids, completion_ids = prompt_ids.masked_fill(prompt_mask == 0, pad), completion_ids.masked_fill(completion_mask == 0, pad)
    with torch.no_grad():
        current, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1), steps)
    log_ratio = 0.3 * torch.randn(n, steps, generator=generator)
    log_ratio[0, 1], log_ratio[4, 2], log_ratio[2, 0] = 2.0, 1.8, -1.5  # past CISPO's cap 5, δ and the clip range
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": torch.tensor(ADVANTAGES),
            "old_per_token_logps": current - log_ratio,
            "ref_per_token_logps": current + 0.2 * torch.randn(n, steps, generator=generator),
            "num_items_in_batch": completion_mask.sum()}


def kept_outputs(trainer: GRPOTrainer) -> list[torch.Tensor]:
    """Make the trainer's log-probability calls keep their outputs' gradients, and list the outputs."""
    kept: list[torch.Tensor] = []
    compute = trainer._get_per_token_logps_and_entropies

    def keeping(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        logps, entropies, aux = compute(*args, **kwargs)
        for tensor in (logps, entropies):
            if tensor is not None and tensor.requires_grad:
                tensor.retain_grad()
        kept[:] = [logps, entropies]
        return logps, entropies, aux

    trainer._get_per_token_logps_and_entropies = keeping
    return kept


def gradients(model: torch.nn.Module, logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``∂/∂logp`` and every parameter's gradient, flattened into one vector."""
    flat = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in model.parameters()])
    return logps.grad.clone(), flat


def compare(name: str, both: dict[str, Any], trl_only: dict[str, Any], tokenizer: Any, folder: Path) -> dict[str, Any]:
    """Build a trainer with the setting's options, run both objectives on the same batch, diff them."""
    config = GRPOConfig(output_dir=str(folder / "trainer"), report_to="none", use_cpu=True, num_generations=GROUP,
                        per_device_train_batch_size=len(LENGTHS), max_completion_length=max(LENGTHS),
                        gradient_accumulation_steps=1, steps_per_generation=1, **both, **trl_only)
    # by path: with beta > 0 TRL loads its reference model from the policy's path (our side needs none)
    trainer = GRPOTrainer(model=str(folder / "model"), reward_funcs=lambda completions, **_: [0.0] * len(completions), args=config,
                          train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}), processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = 1  # the training loop sets it; one micro-batch per step here
    model = trainer.model.train()
    inputs = batch(trainer, model.config.vocab_size, tokenizer.pad_token_id)
    kept = kept_outputs(trainer)

    model.zero_grad()
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_logp_grad, trl_param_grad = gradients(model, kept[0])

    options = GRPOOptions(num_generations=GROUP, **both)
    mask = inputs["completion_mask"].bool()
    ids = [torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
           torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)]
    model.zero_grad()
    logps, entropies, _ = trainer._get_per_token_logps_and_entropies(model, *ids, mask.shape[1], compute_entropy=True)
    normalisers = Normalisers(counted=mask.sum(), batch_tokens=mask.sum(), sequences=mask.shape[0],
                              max_new_tokens=config.max_completion_length, bonus_steps=mask.sum())
    ours = micro_batch_loss(
        logps, inputs["old_per_token_logps"], inputs["ref_per_token_logps"] if options.beta else None,
        inputs["advantages"], mask, mask, normalisers, term=options.policy_term, beta=options.beta,
        use_bias_correction_kl=options.use_bias_correction_kl,
        entropy=entropies if options.entropy_coef else None, bonus_mask=mask, entropy_coef=options.entropy_coef)
    ours.loss.backward()
    our_logp_grad, our_param_grad = gradients(model, logps)

    return {"setting": name, "trl_loss": trl_loss.item(), "ours": ours.loss.item(),
            "loss_diff": abs(trl_loss.item() - ours.loss.item()),
            "logp_grad_diff": (trl_logp_grad - our_logp_grad).abs().max().item(),
            "param_grad_diff": (trl_param_grad - our_param_grad).abs().max().item(),
            "logp_grad_scale": trl_logp_grad.abs().max().item(), "param_grad_scale": trl_param_grad.abs().max().item(),
            "options": both, "trl_options": trl_only}


def passes(row: dict[str, Any]) -> bool:
    """Every difference within the tolerance, relative to the value where that exceeds 1."""
    return (row["loss_diff"] <= TOLERANCE * max(1.0, abs(row["trl_loss"]))
            and row["logp_grad_diff"] <= TOLERANCE * max(1.0, row["logp_grad_scale"])
            and row["param_grad_diff"] <= TOLERANCE * max(1.0, row["param_grad_scale"]))


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| setting | TRL loss | ours | \\|Δ\\| loss | max \\|Δ\\| ∂/∂logp | max \\|Δ\\| ∂/∂θ | |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        verdict = "ok" if row["ok"] else "MISMATCH"
        lines.append(f"| {row['setting']} | {row['trl_loss']:.8f} | {row['ours']:.8f} | {row['loss_diff']:.2e} | "
                     f"{row['logp_grad_diff']:.2e} | {row['param_grad_diff']:.2e} | {verdict} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the rows as JSON to this file")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    tokenizer = load_tokenizer(TINY_MODEL)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        load_causal_lm(TINY_MODEL, seed=0).save_pretrained(folder / "model")
        for name, both, trl_only in SETTINGS:
            row = compare(name, both, trl_only, tokenizer, folder)
            rows.append({**row, "ok": passes(row)})
    machine = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, CPU only, float32"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; {machine}; "
          f"model {TINY_MODEL}; batch of {len(LENGTHS)} completions of lengths {LENGTHS}\n")
    print(table(rows) + "\n\n" + "\n".join(NOTES))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                                         "trl": trl.__version__, "machine": machine, "tolerance": TOLERANCE,
                                         "notes": NOTES, "results": rows}, indent=2, ensure_ascii=False) + "\n")
    failed = [row["setting"] for row in rows if not row["ok"]]
    if failed:
        print(f"\nDiffer by more than {TOLERANCE}: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
