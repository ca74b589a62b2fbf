"""Op definitions, one module per family; :mod:`eqsat.egraph.ops` assembles them into the table."""
