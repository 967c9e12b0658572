import pytest

from motg_lightning.lightning.data import ReasoningGymDataModule, TaskSpec, collate_prompts
from motg_lightning.models import TINY_MODEL

EASY = TaskSpec("basic_arithmetic", config={"max_terms": 2, "max_digits": 1})


def make(**kwargs):
    options = dict(tasks=[EASY], tokenizer=TINY_MODEL, train_size=40, val_size=20, test_size=20, seed=7)
    return ReasoningGymDataModule(**{**options, **kwargs})


def test_splits_are_disjoint_and_deterministic():
    first, second = make().generate_entries(), make().generate_entries()
    questions = {split: [e["question"] for e in entries] for split, entries in first.items()}
    assert questions == {split: [e["question"] for e in entries] for split, entries in second.items()}
    assert [len(questions[split]) for split in ("train", "val", "test")] == [40, 20, 20]
    assert not set(questions["train"]) & set(questions["val"])
    assert not set(questions["test"]) & (set(questions["train"]) | set(questions["val"]))
    assert len(set(questions["val"])) == 20 and len(set(questions["test"])) == 20
    assert questions["train"] != [e["question"] for e in make(seed=8).generate_entries()["train"]]


def test_too_few_distinct_questions_is_reported():
    tiny = TaskSpec("basic_arithmetic", config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+"],
                                                "allow_parentheses": False, "allow_negation": False})
    with pytest.raises(ValueError, match="data.test_size=150: the tasks gave only"):
        make(tasks=[tiny], val_size=100, test_size=150).generate_entries()


def test_composite_tasks_follow_their_weights_and_configs():
    module = make(tasks=[TaskSpec("basic_arithmetic", 3.0, {"max_terms": 2}), TaskSpec("leg_counting", 1.0, {"max_animals": 3})], train_size=200)
    train = module.generate_entries()["train"]
    names = [e["metadata"]["source_dataset"] for e in train]
    assert 0.6 < names.count("basic_arithmetic") / len(names) < 0.9
    assert all(e["metadata"]["num_animals"] <= 3 for e in train if e["metadata"]["source_dataset"] == "leg_counting")


def test_prompts_use_the_chat_template_and_prefill_think(tokenizer):
    module = make()
    module.setup("fit")
    text = tokenizer.decode(module.splits["train"][0]["prompt_ids"])
    assert text.startswith("<|im_start|>system\n") and "<think> </think>" in text
    assert module.splits["train"][0]["entry"]["question"] in text
    assert text.endswith("<|im_start|>assistant\n<think>\n")
    plain = make(prefill_think=False)
    plain.setup("fit")
    assert tokenizer.decode(plain.splits["train"][0]["prompt_ids"]).endswith("assistant\n")


def test_batches_are_left_padded_and_keep_entries():
    module = make(batch_size=4)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["prompt_ids"].shape[0] == 4 and len(batch["entries"]) == 4 and batch["tasks"] == ["basic_arithmetic"] * 4
    assert (batch["prompt_mask"][:, -1] == 1).all()
    padded = collate_prompts([{"prompt_ids": [5, 6], "entry": {}, "task": "a"}, {"prompt_ids": [7], "entry": {}, "task": "a"}], pad_id=0)
    assert padded["prompt_ids"].tolist() == [[5, 6], [0, 7]] and padded["prompt_mask"].tolist() == [[1, 1], [0, 1]]


def test_training_order_is_seeded():
    orders = []
    for _ in range(2):
        module = make(batch_size=4)
        module.setup("fit")
        orders.append([q["question"] for q in next(iter(module.train_dataloader()))["entries"]])
    assert orders[0] == orders[1]


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="unknown Reasoning-Gym task 'basic_arithmetc'.*Did you mean basic_arithmetic.*Valid names: .*leg_counting"):
        make(tasks=[TaskSpec("basic_arithmetc")])


def test_unknown_task_option_lists_valid_options():
    with pytest.raises(ValueError, match="unknown option\\(s\\) \\['max_term'\\].*max_terms"):
        make(tasks=[TaskSpec("basic_arithmetic", config={"max_term": 2})])


@pytest.mark.parametrize("name, config, reason", [
    ("basic_arithmetic", {"min_terms": 5, "max_terms": 2}, "max_terms must be >= min_terms"),
    ("basic_arithmetic", {"max_terms": "two"}, "'>=' not supported between instances of 'str' and 'int'"),
    ("calendar_arithmetic", {"year": 0}, "year must be a positive integer"),  # a ValueError of Reasoning-Gym's
    ("calendar_arithmetic", {"tasks": ["nope"]}, "Invalid tasks: nope"),  # checked in the config's __post_init__
])
def test_task_option_values_reasoning_gym_refuses_name_the_task(name, config, reason):
    """Reasoning-Gym's own range and type checks run when the data module is built."""
    with pytest.raises(ValueError, match=f"data.tasks\\[{name}\\].config=.*refuses these values \\({reason}"):
        make(tasks=[TaskSpec(name, config=config)])


def test_tasks_whose_config_has_no_checks_are_accepted():
    assert make(tasks=[TaskSpec("power_function")]).task_names == ["power_function"]


def test_missing_chat_template_is_reported(monkeypatch):
    import motg_lightning.lightning.data as data

    original = data.load_tokenizer

    def no_template(name, **options):
        tokenizer = original(name, **options)
        tokenizer.chat_template = None
        return tokenizer

    monkeypatch.setattr(data, "load_tokenizer", no_template)
    with pytest.raises(ValueError, match="data.chat_template"):
        make().setup("fit")


@pytest.mark.parametrize("action", ["drop", "truncate"])
def test_long_prompts_are_dropped_or_truncated_and_counted(action):
    whole = ReasoningGymDataModule(tokenizer=TINY_MODEL, train_size=20, val_size=4, test_size=4)
    whole.setup()
    lengths = sorted(len(item["prompt_ids"]) for item in whole.splits["train"])
    limit = lengths[len(lengths) // 2]
    limited = ReasoningGymDataModule(tokenizer=TINY_MODEL, train_size=20, val_size=4, test_size=4, max_prompt_length=limit, long_prompts=action)
    limited.setup()
    longer = sum(length > limit for length in lengths)
    assert longer > 0 and max(len(item["prompt_ids"]) for item in limited.splits["train"]) <= limit
    if action == "drop":
        assert len(limited.splits["train"]) == 20 - longer and limited.prompt_counts["dropped"] >= longer
    else:
        assert len(limited.splits["train"]) == 20 and limited.prompt_counts["truncated"] >= longer
        original = {item["entry"]["question"]: item["prompt_ids"] for item in whole.splits["train"]}
        for item in limited.splits["train"]:
            assert item["prompt_ids"] == original[item["entry"]["question"]][-limit:], "kept the end: the opened turn"


def test_invalid_prompt_limits_name_the_field():
    with pytest.raises(ValueError, match="data.max_prompt_length=0"):
        ReasoningGymDataModule(max_prompt_length=0)
    with pytest.raises(ValueError, match="data.long_prompts='cut'"):
        ReasoningGymDataModule(long_prompts="cut")
