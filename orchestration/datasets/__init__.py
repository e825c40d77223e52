"""Data sets in object storage: ``upload`` a folder with its manifest (``manifest``), and materialise
the data sets a node's trials need into its local cache, once, checked (``cache``)."""
