"""The environment, numpy only: tables, lexicon, judge, world, relevance data, search, shoppers, metrics, the shop."""
