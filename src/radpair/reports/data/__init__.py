"""Data files of the report-language tools (header synonyms, site rules, rule packs).

A package only so that setuptools ships the files; load them with
:func:`radpair.reports.resources.load_yaml`.
"""
