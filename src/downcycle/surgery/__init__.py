"""Surgery on checkpoints, never holding the model (no torch): layer selections (:mod:`.layerspec`),
cut plans (:mod:`.plan`), the config and tensor plan of a depth cut (:mod:`.depth`), and the cut
stage itself (:mod:`.cut`: headers rewritten, byte ranges copied)."""
