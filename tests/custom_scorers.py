"""Scorers of a user's own, which a question file's config names by import path."""

def last_word(answer, entry):
    """1 when the answer's last word is the oracle answer: replies such as `it is 7` count."""
    return float(bool(answer) and answer.split()[-1] == entry["answer"])


def broken(answer, entry):
    """A scorer with a bug."""
    raise KeyError("no such field")


def one_argument(answer):
    """Not a scorer: it cannot take the entry."""
    return 1.0
