"""Marker detection: every way a tokenizer can split a marker is caught, at its last token and never before."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from motg_lightning.models import EMBEDDED_MODEL, load_tokenizer
from motg_lightning.rollout.stops import TokenPatterns, marker_automaton

MARKERS = ("</think>", "</answer>")
# Single characters, so the markers can be spelled character by character, and merged pieces that
# split them in other places or carry neighbouring text.
PIECES = sorted(set("</think>answer \n.xabcdef") | {
    "</", "think", "k>", "\n</", ".</think>\n", "</think>", "thi", "nk", "ink>", "hink", "</th", "</thin",
    "</think>\n\n", " </", ">\n", ">\n\n", "nk>x", "</answer>", "ans", "wer", "wer>", "er>\n", "</a", "answer",
    "r>", "x<", ".<", "x</", "</answ",
})


def tiny_tokenizer(style: str) -> PreTrainedTokenizerFast:
    """A real tokenizer over ``PIECES``: byte-level ('Ġ' for a space, 'Ċ' for a newline) or SentencePiece-like ('▁')."""
    if style == "byte_level":
        spell = lambda piece: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(piece)[0][0]
        pre, decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    else:
        spell = lambda piece: piece.replace(" ", "▁")
        pre, decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    vocab = {token: i for i, token in enumerate(dict.fromkeys(["<unk>", "▁", *map(spell, PIECES)]))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer, backend.decoder = pre, decoder
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>"})
    return tokenizer


def token_texts(tokenizer) -> dict[int, str]:
    """Each id's text, read off decoding it after a fixed token (so that no leading space is dropped)."""
    anchor = tokenizer.encode("x", add_special_tokens=False)
    base = tokenizer.decode(anchor, clean_up_tokenization_spaces=False)
    return {i: tokenizer.decode(anchor + [i], clean_up_tokenization_spaces=False)[len(base):] for i in range(len(tokenizer))}


def marker_splits(texts: dict[int, str], marker: str) -> list[list[int]]:
    """Every way to write ``marker`` with tokens of ``texts``: cut into pieces, the first piece a token
    that may start with other text, the middle ones tokens of exactly their piece, the last a token
    that may end with other text; or one token holding the marker anywhere."""
    clean = {i: text for i, text in texts.items() if marker not in text}
    cuts = range(1, len(marker))
    firsts = {k: [i for i, text in clean.items() if text.endswith(marker[:k])] for k in cuts}
    lasts = {k: [i for i, text in texts.items() if text.startswith(marker[k:])] for k in cuts}
    middles = {  # cut -> (token, next cut) for tokens spelling a piece of the marker inside it
        k: [(i, k + len(t)) for i, t in clean.items() if t and marker.startswith(t, k) and k + len(t) < len(marker)] for k in cuts
    }

    def onwards(k):  # token paths from cut k to the end of the marker
        yield from ([last] for last in lasts[k])
        for token, cut in middles[k]:
            yield from ([token] + path for path in onwards(cut))

    whole = [[i] for i, text in texts.items() if marker in text]
    return whole + [[first] + path for k in cuts for first in firsts[k] for path in onwards(k)]


def completed_at(texts: dict[int, str], marker: str, ids: list[int]) -> list[bool]:
    """Ground truth on the text: does token ``t`` complete an occurrence of ``marker``?"""
    text, done = "", []
    for i in ids:
        start = max(len(text) - len(marker) + 1, 0)
        text += texts[i]
        done.append(marker in text[start:])
    return done


def detected(patterns: TokenPatterns, sequences: list[list[int]], pad: int) -> torch.Tensor:
    """``[len(sequences), width]`` matches of ``patterns``, sequences left-padded with ``pad``."""
    width = max(map(len, sequences))
    batch = torch.tensor([[pad] * (width - len(ids)) + ids for ids in sequences])
    state, matches = patterns.initial_state(len(batch)), []
    for token in batch.T:
        state, matched = patterns.advance(state, token)
        matches.append(matched)
    return torch.stack(matches, 1)


def assert_every_split_caught(tokenizer, marker: str, minimum: int):
    texts = token_texts(tokenizer)
    splits = marker_splits(texts, marker)
    assert len(splits) >= minimum
    assert all(completed_at(texts, marker, ids) == [False] * (len(ids) - 1) + [True] for ids in splits)
    # Also after text that is a beginning of the marker ("</thin" then "</think>"): a restart.
    leads = [[i] for i, text in texts.items() if marker not in text and text.endswith(marker[0])] + [[]]
    leads += [[i] for i, text in texts.items() if text in {marker[:k] for k in range(2, len(marker))}]
    sequences = [lead + ids for lead in leads for ids in splits]
    sequences = [ids for ids in sequences if completed_at(texts, marker, ids) == [False] * (len(ids) - 1) + [True]]
    pad = next(i for i, text in texts.items() if text and set(text).isdisjoint(marker))
    found = detected(TokenPatterns.from_strings(tokenizer, [marker]), sequences, pad)
    expected = torch.zeros_like(found)
    expected[:, -1] = True
    wrong = [tokenizer.convert_ids_to_tokens(sequences[row]) for row in (found != expected).any(1).nonzero().flatten().tolist()]
    assert not wrong, f"{len(wrong)} of {len(sequences)} splits of {marker!r} detected at the wrong step, e.g. {wrong[:5]}"


@pytest.mark.parametrize("style", ["byte_level", "metaspace"])
@pytest.mark.parametrize("marker", MARKERS)
def test_every_split_over_a_character_level_vocabulary_is_caught_at_its_last_token(style, marker):
    assert_every_split_caught(tiny_tokenizer(style), marker, minimum=100)


@pytest.fixture(scope="module")
def embedded_tokenizer():
    return load_tokenizer(EMBEDDED_MODEL)


@pytest.mark.parametrize("marker", MARKERS)
def test_every_split_over_the_embedded_vocabulary_is_caught_at_its_last_token(embedded_tokenizer, marker):
    assert_every_split_caught(embedded_tokenizer, marker, minimum=3000)


def feed(patterns: TokenPatterns, ids: list[int]) -> list[bool]:
    return detected(patterns, [ids], pad=0)[0].tolist()


def test_a_marker_inside_a_token_is_caught_and_look_alikes_are_not(embedded_tokenizer):
    tokenizer = tiny_tokenizer("byte_level")
    middle = tokenizer.convert_tokens_to_ids(".</think>Ċ")  # text before and after the marker
    assert feed(TokenPatterns.from_strings(tokenizer, ["</think>"]), [middle]) == [True]
    patterns = TokenPatterns.from_strings(embedded_tokenizer, ["</think>"])
    for text in ("so 5</thin>x", "a </ think> b", "</Think>", "< /think>", "</think", "think>", "<think>"):
        assert not any(feed(patterns, embedded_tokenizer.encode(text, add_special_tokens=False))), text
    for text in ("so 5</think>", "x.</think>", "</think></think>"):
        ids = embedded_tokenizer.encode(text, add_special_tokens=False)
        assert feed(patterns, ids)[-1] and sum(feed(patterns, ids)) == text.count("</think>"), text


def test_a_special_token_marker_matches_its_single_id_and_stopped_rows_never_match(embedded_tokenizer):
    patterns = TokenPatterns.from_strings(embedded_tokenizer, ["</answer>", "<|im_end|>"])
    end = embedded_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert feed(patterns, [end]) == [True]
    # The rollout pads a stopped row (here with the marker itself): inactive rows keep their state, never match.
    token, active = torch.tensor([end, end]), torch.tensor([False, True])
    state, matched = patterns.advance(patterns.initial_state(2), token, active)
    assert matched.tolist() == [False, True] and torch.equal(state[0], patterns.initial_state(1)[0])
    # Ids past the tokenizer (a model's padded embedding rows) hold no marker text.
    assert feed(patterns, [len(embedded_tokenizer) + 5, end]) == [False, True]


def test_the_update_compiles_to_one_graph(embedded_tokenizer):
    patterns = TokenPatterns.from_strings(embedded_tokenizer, list(MARKERS))
    ids = torch.tensor(embedded_tokenizer.encode("a</think>\n<answer>7</answer>", add_special_tokens=False))
    compiled = torch.compile(patterns.advance, fullgraph=True, backend="aot_eager")
    state, compiled_state = patterns.initial_state(1), patterns.initial_state(1)
    for token in ids:
        state, matched = patterns.advance(state, token[None])
        compiled_state, compiled_matched = compiled(compiled_state, token[None])
        assert torch.equal(state, compiled_state) and torch.equal(matched, compiled_matched)


@pytest.mark.parametrize("marker", ["abab", "aab", "<a<a>"])
def test_markers_that_overlap_themselves_match_every_occurrence(marker):
    generator = torch.Generator().manual_seed(0)
    pieces = ["", "a", "b", "<", ">", "x", "ab", "ba", "aab", "abab", "bab", "a<", "<a", "a>", "xab", "abx", "ababab"]
    texts = dict(enumerate(pieces))
    next_state, completes = marker_automaton(list(texts.values()), list(texts), marker, len(texts) + 1)
    patterns = TokenPatterns(next_state, completes, torch.zeros(1, dtype=torch.long))
    sequences = torch.randint(len(texts), (300, 12), generator=generator).tolist()
    truth = torch.tensor([completed_at(texts, marker, ids) for ids in sequences])
    assert truth.any() and torch.equal(detected(patterns, sequences, pad=0), truth)
