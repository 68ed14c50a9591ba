"""analysis/vocabulary.py owns the claim ids: every list of them elsewhere is derived from it."""
from analysis import claims, collect
from analysis import vocabulary as V


def test_every_claim_belongs_to_one_track_and_every_list_names_known_claims():
    assert set(V.ACCURACY) | set(V.EFFICIENCY) == set(V.CLAIMS)
    assert not set(V.ACCURACY) & set(V.EFFICIENCY) and set(V.CONTROLS) <= set(V.ACCURACY)
    assert set(V.PAPER) == set(V.CLAIMS) and set(V.REGION_WHY) <= set(V.CLAIMS)
    drawn = [c for ids in V.FOREST_GROUPS.values() for c in ids]
    assert len(drawn) == len(set(drawn)) and set(drawn) <= set(V.CLAIMS)
    names = {c.name for c in V.COMPARISONS}
    assert set(V.POWER) <= set(V.CLAIMS) and set(V.POWER.values()) <= names


def test_the_modules_read_the_vocabulary_rather_than_keep_their_own():
    assert collect.Comparison is V.Comparison and collect.POWER is V.POWER
    assert claims.CLAIMS is V.CLAIMS and claims.ACCURACY is V.ACCURACY
