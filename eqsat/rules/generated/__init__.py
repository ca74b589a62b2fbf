"""The ``generated`` rule family at run time: the committed rules file (``rules.json``), its
loader (:mod:`.rulefile`) and the N-ary merges lifted from it (:mod:`.lift`). The generator that
writes the file is :mod:`eqsat.rules.discover`; nothing here imports it."""
