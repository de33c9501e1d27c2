"""The label audit of the paper's Appendix F: likely label errors and duplicates of a data set,
read from a finished run's neighbour window and cache (``adasim-ray audit RUN_DIR``).

``scores`` holds the ranking (plain numpy/PyTorch), ``report`` reads a run and writes the CSV
files and PNG contact sheets.
"""
