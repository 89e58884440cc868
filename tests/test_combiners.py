import random

import pytest

from beam_preprocess import combiners


def _brute_force(tables, k, min_count):
    items = [
        (n, token, df)
        for table in tables
        for token, (n, df) in table.items()
        if n >= min_count and token not in combiners.RESERVED_TOKENS
    ]
    return sorted(items, key=lambda t: (-t[0], t[1]))[:k]


@pytest.mark.parametrize("k", [1, 7, 50, 10_000])
def test_top_tokens_of_shards_is_the_global_top_k(k):
    """Per-shard top-K, then TopTokensFn over the shards (any grouping) == one global sort."""
    rng = random.Random(k)
    tables = [
        {f"t{s}-{i}".encode(): [rng.randint(1, 30), rng.randint(1, 9)] for i in range(400)}
        for s in range(6)
    ]
    tables[0][b"[UNK]"] = [10**6, 1]  # reserved tokens never enter the vocabulary
    tops = [combiners.top_tokens(t, k, min_count=2) for t in tables]
    fn = combiners.TopTokensFn(k)
    one = fn.create_accumulator()
    for top in tops:
        one = fn.add_input(one, top)
    left, right = fn.create_accumulator(), fn.create_accumulator()
    for i, top in enumerate(tops):
        if i % 2:
            left = fn.add_input(left, list(reversed(top)))  # inputs need not come sorted
        else:
            right = fn.add_input(right, top)
    expected = _brute_force(tables, k, 2)
    assert fn.extract_output(one) == expected
    assert fn.extract_output(fn.merge_accumulators([left, right])) == expected
    assert len(expected) == min(k, sum(len(t) for t in tops))
