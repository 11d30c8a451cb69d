"""Commands made of several stages, above the stage packages they combine (the layering contract keeps
them here): ``cut --keep`` (an analysis, then the cut) and ``cut --heal`` (the cut, healed as it is
written) in :mod:`.cut`; ``prune --data`` (the width-importance pass, then the prune) in :mod:`.prune`;
``demo`` (the embedded recipe through the pipeline) in :mod:`.demo`."""
