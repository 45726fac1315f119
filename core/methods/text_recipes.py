"""Shared pieces of the text methods' recipes (one per model size: tiny, small, base)."""
from __future__ import annotations

TEXT_SCALES = ("tiny", "small", "base")
BERT = "BERT (Devlin et al., 2019, arXiv:1810.04805) appendix A.2"
SMALL_BERTS = "Turc et al., 2019 (arXiv:1908.08962), the 24 small BERTs: BERT-Tiny L=2 H=128 A=2, BERT-Mini L=4 H=256 A=4"
BUDGET = "Izsak et al., 2021 (arXiv:2104.07705), BERT on an academic budget"

# the backbone and tokenizer of each size; the methods add their optimisation settings
SIZES = {
    "tiny": {"backbone": "text_tiny", "backbone_options": {"max_length": 64},
             "tokenizer": {"kind": "bpe", "vocab_size": 8000, "lowercase": True}},
    "small": {"backbone": "text_small", "backbone_options": {"max_length": 128},
              "tokenizer": {"kind": "bpe", "vocab_size": 16000, "lowercase": True}},
    "base": {"backbone": "text_base", "backbone_options": {"max_length": 512},
             "tokenizer": {"kind": "bpe", "vocab_size": 30522, "lowercase": True}},
}
SIZE_SOURCES = {
    "backbone": f"tiny/small: {SMALL_BERTS}; base: {BERT} (L=12 H=768 A=12), pre-norm as Xiong et al., 2020",
    "tokenizer": f"BPE (RoBERTa, arXiv:1907.11692 sec. 4.4; deterministic here, unlike WordPiece in `tokenizers`), "
                 f"lowercased, base size {BERT}'s 30,522 tokens; smaller vocabularies for the small corpora the "
                 "tiny/small sizes are meant for",
}
