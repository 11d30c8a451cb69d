"""Surgery on checkpoints, never holding the model (no torch): layer selections (:mod:`.layerspec`),
cut plans (:mod:`.plan`), the config and tensor plan of a depth cut (:mod:`.depth`), the cut stage
itself (:mod:`.cut`: headers rewritten, byte ranges copied); width plans (:mod:`.width_plan`), the
config and per-tensor slices of a width prune (:mod:`.width`) and the prune stage (:mod:`.prune`)."""
