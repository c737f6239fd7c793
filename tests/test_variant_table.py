"""bench/variant_table.py: supernet variants' entries pooled over their seeds."""

from bench.variant_table import grouped, table, variant_and_seed


def entry(name, tau, lower=-0.1, regret=0.01):
    return {"variant": name, "minutes": 3.0,
            "by_scoring": {"probe": {"kendall_tau": tau, "kendall_tau_ci": [lower, 0.9],
                                     "regret": regret}}}


def test_names_that_differ_only_in_their_seed_are_one_variant():
    assert variant_and_seed("fixed start, edges, 12 epochs, seed 2 (data seed 0), probe on "
                            "4,096") == ("fixed start, edges, 12 epochs, probe on 4,096", 2)
    assert variant_and_seed("fixed start, edges, 12 epochs") == ("fixed start, edges, "
                                                                 "12 epochs", 0)


def test_the_table_pools_seeds_and_keeps_the_worst_lower_bound():
    entries = [entry("edges, 6 epochs", 0.5, lower=0.1),
               entry("edges, 6 epochs, seed 1 (data seed 0)", 0.3, lower=-0.2, regret=0.03),
               entry("top-slot, 6 epochs, seed 1", 0.8),
               {"variant": "heads only", "by_scoring": {"heads": {"kendall_tau": 0.2}}}]
    groups = grouped(entries, "probe")
    assert sorted(groups) == ["edges, 6 epochs", "top-slot, 6 epochs"]
    assert sorted(groups["edges, 6 epochs"]) == [0, 1]
    rows = table(groups).splitlines()
    assert rows[2] == ("| edges, 6 epochs | 0, 1 | 0.500 / 0.300 | 0.400 ± 0.141 | -0.200 | "
                       "0.020 |")
    assert rows[3] == "| top-slot, 6 epochs | 1 | 0.800 | 0.800 | -0.100 | 0.010 |"
