import torch

from motg_lightning.stops import TokenPatterns, marker_tails


def test_marker_tails_end_with_the_marker(tokenizer):
    tails = marker_tails(tokenizer, "</think>")
    assert tails
    for tail in tails:
        assert "</think>" in tokenizer.decode(list(tail))
        assert "</think>" not in tokenizer.decode(list(tail[1:]))


def test_matches_only_windows_that_end_with_a_pattern(tokenizer):
    patterns = TokenPatterns.from_strings(tokenizer, ["</think>"])
    ending = tokenizer.encode("so 5</think>", add_special_tokens=False)
    middle = tokenizer.encode("</think> and more", add_special_tokens=False)
    width = max(len(ending), len(middle), patterns.width)
    window = torch.full((3, width), -1)
    window[0, width - len(ending):] = torch.tensor(ending)
    window[1, width - len(middle):] = torch.tensor(middle)
    assert patterns.matches(window).tolist() == [True, False, False]


def test_no_patterns_never_match():
    assert not TokenPatterns([]).matches(torch.zeros(2, 3, dtype=torch.long)).any()
