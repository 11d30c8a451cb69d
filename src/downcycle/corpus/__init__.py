"""Corpora for training and evaluation: sources (:mod:`.sources`, :mod:`.hub`, :mod:`.generated`),
tokenization (:mod:`.tokenize`), mixing (:mod:`.mixture`), packing (:mod:`.pack`), shards
(:mod:`.shards`), calibration windows for analysis and healing (:mod:`.calibration`), the ``downcycle data`` command (:mod:`.build`) and the loader (:mod:`.loader`).
Import the module you need: ``downcycle.corpus.sources`` stays light, ``loader`` imports torch.
"""
