"""Compute the category vectors shipped with the package (taxonomist/models/label_vectors.py): the leaves of the
built-in Google and Shopify taxonomies, embedded by the default zero-shot encoders (MiniLM for English, e5 for
other languages). Run after changing a built-in taxonomy, an encoder preset or ``embed_labels``:

    python scripts/build_label_vectors.py
"""

from __future__ import annotations

import logging

from taxonomist.encoders.transformer import load_text_encoder
from taxonomist.models.label_vectors import store
from taxonomist.models.zeroshot import embed_labels
from taxonomist.taxonomy import BUILTIN, Taxonomy

VERSIONS = {"google": "Google Product Taxonomy 2021-09-21", "shopify": "Shopify Standard Product Taxonomy 2025-06"}


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    for enc_name in ("minilm-en", "e5-multilingual"):
        encoder = load_text_encoder(enc_name)
        for tax_name in BUILTIN:
            leaves = Taxonomy.builtin(tax_name).leaves()
            file = store(f"{tax_name}-{enc_name}", leaves, encoder, embed_labels(leaves, encoder), VERSIONS[tax_name])
            logging.info("%s: %d leaves, %.1f MB", file.name, len(leaves), file.stat().st_size / 1e6)


if __name__ == "__main__":
    main()
