"""THE text-representation registry: a spec string -> a representation fitted on training texts.

    from dlm.representations import fit_representation
    rep = fit_representation("ngram-svd:64", train_texts, seed=0)
    rep.spec, rep.dim, rep.feature_names        # "ngram-svd:64", 64, None
    H = rep.transform(any_texts)                # [N, 64] float32 (rep(texts) is the same)

Specs (available_representations() lists the registered ones):
  none          no text term (dim 0)
  ngram:D       hashed word 1-2 grams, D columns (default 256), l2 rows; ngram:D:sparse gives
                scipy CSR rows (wide linear baselines). Deterministic; names from the texts.
  ngram-svd:D   hashed n-grams projected on their top D singular directions of the training
                texts, standardised (default 128)
  trunk         mean-pooled states of a decoder trunk; context trunk=(params, cfg, tokenizer)
  llm:NAME      mean-pooled frozen states of a pretrained model (dlm.models.pretrained)
  phi           the simulated world's features: registered by `import sims.featurise`

Every user (the estimator's text term, the reward heads, the Python API, the scripts) takes
one of these strings from its config, so the same spec gives the same matrix everywhere.
Adding a representation is one builder and one register_representation call.
"""
from dlm.representations.registry import (DEFAULT_TEXT_SPEC, Features, Representation,
                                          available_representations, fit_representation,
                                          register_representation, text_term)
from dlm.representations.ngram import HashedNgrams, NgramSVD, gram_counts, ngram_names
from dlm.representations.trunk import LLMStates, TrunkStates

__all__ = ["DEFAULT_TEXT_SPEC", "Features", "Representation", "available_representations",
           "fit_representation", "register_representation", "text_term", "HashedNgrams",
           "NgramSVD", "gram_counts", "ngram_names", "LLMStates", "TrunkStates"]
