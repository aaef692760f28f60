"""Readers for the general-language sources of the corpus recipe, one module per file format.

Each reader yields raw (English, German) pairs from unpacked Debian packages and only undoes the quirks of
its own format (markup, roff requests, entities, accelerators); normalising, filtering, deduplicating and
splitting happen in `model.data`. The table of sources (package, domain, reader) is `model.corpus.sources`.
The LibreOffice help, the first gettext catalogs and the Ding dictionary keep their readers in
`model.corpus_sources`, unchanged, so that the original splits rebuild byte-identically.
"""
