"""The conditions `migwatch reload` builds: keys of dead-lettered events as quoted identifiers
and literals, and a Debezium regex that matches exactly the collection it names."""

from __future__ import annotations

import re

from migwatch.load.reload import java_regex_literal, key_condition


def test_keys_become_an_in_list_of_literals_under_quoted_names() -> None:
    cond = key_condition(("Id", "sub"), [(1, "o'k"), (2, "a\\b"), (1, "o'k")])
    assert cond.startswith('("Id", "sub") IN (')
    assert "(1, 'o''k')" in cond and "E'a\\\\b'" in cond
    assert cond.count("(1, 'o''k')") == 1  # a key dead-lettered twice is selected once
    assert key_condition(("id",), [(7,)]) == '("id") IN ((7))'


def test_the_collection_regex_matches_only_its_collection() -> None:
    for name in ('"public"."Re_load"', '"public"."AddedLäter"', '"s-1"."t+x(y)"'):
        pattern = java_regex_literal(name)  # Java and Python agree on these escapes
        assert re.fullmatch(pattern, name)
        assert not re.fullmatch(pattern, name.replace("_", "x").replace(".", "x"))
