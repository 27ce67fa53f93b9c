"""Source document formats shared by Concelier and Excititor.

* :mod:`.reader` — the one reader shape: a :class:`~.reader.DocumentReader` has a ``format`` name, a
  ``detect`` test and ``read(doc, ctx) -> ReadResult[T]``; each product registers its readers in one
  table (Concelier: advisories, Excititor: VEX claims).
* :mod:`.csaf_product_tree` — CSAF 2.0/2.1 ``product_tree`` parsed once, for both products.
"""
